package status

import (
	"reflect"
	"testing"
)

func TestDrift(t *testing.T) {
	tests := []struct {
		name          string
		desired, live map[string]any
		want          []string
	}{
		{"server defaults are ignored",
			map[string]any{"spec": map[string]any{"replicas": 2}},
			map[string]any{"spec": map[string]any{"replicas": int64(2), "revisionHistoryLimit": int64(10)}, "status": map[string]any{}}, nil},
		{"changed scalar",
			map[string]any{"data": map[string]any{"a": "x", "b": "y"}},
			map[string]any{"data": map[string]any{"a": "x", "b": "z"}}, []string{"data.b"}},
		{"missing field",
			map[string]any{"metadata": map[string]any{"labels": map[string]any{"app": "s"}}},
			map[string]any{"metadata": map[string]any{}}, []string{"metadata.labels"}},
		{"containers matched by name, order-free",
			map[string]any{"c": []any{map[string]any{"name": "a", "image": "1"}, map[string]any{"name": "b", "image": "2"}}},
			map[string]any{"c": []any{map[string]any{"name": "b", "image": "3", "imagePullPolicy": "IfNotPresent"}, map[string]any{"name": "a", "image": "1"}}},
			[]string{"c[b].image"}},
		{"container removed",
			map[string]any{"c": []any{map[string]any{"name": "a"}, map[string]any{"name": "curl"}}},
			map[string]any{"c": []any{map[string]any{"name": "a"}}}, []string{"c[curl]"}},
		{"plain list by position",
			map[string]any{"args": []any{"-c", "x"}},
			map[string]any{"args": []any{"-c", "y"}}, []string{"args[1]"}},
		{"empty desired list absent live",
			map[string]any{"spec": map[string]any{"volumeClaimTemplates": []any{}}},
			map[string]any{"spec": map[string]any{}}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := Drift(tt.desired, tt.live); !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Drift = %v, want %v", got, tt.want)
			}
		})
	}
}
