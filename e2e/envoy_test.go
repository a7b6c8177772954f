package e2e_test

import (
	"fmt"
	"testing"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/anypb"
	"sigs.k8s.io/yaml"

	// The typed_config types the scaffold's bootstrap names: registered so
	// protojson can resolve them and the walk below can validate them.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// envoyWant is what the bootstrap must name.
type envoyWant struct {
	SecretName     string // the SDS secret: the workload SPIFFE ID
	ValidationName string // the SDS validation context: spiffe://<trust domain>
	SDSPipe        string // the SDS cluster's unix socket: the agent's socket_path
}

// checkEnvoyBootstrap parses envoy.yaml into Envoy's Bootstrap message
// (unknown fields rejected), runs the generated validation on it and on every
// typed_config inside, and checks the SDS names and the agent socket.
func checkEnvoyBootstrap(t *testing.T, envoyYAML string, want envoyWant) {
	t.Helper()
	js, err := yaml.YAMLToJSON([]byte(envoyYAML))
	if err != nil {
		t.Fatalf("envoy.yaml: %v", err)
	}
	var bs bootstrapv3.Bootstrap
	if err := protojson.Unmarshal(js, &bs); err != nil {
		t.Fatalf("envoy.yaml does not parse as an Envoy v3 Bootstrap: %v", err)
	}
	if err := bs.ValidateAll(); err != nil {
		t.Fatalf("envoy.yaml: Bootstrap validation: %v", err)
	}
	n := 0
	if err := eachAny(&bs, func(m proto.Message) error {
		n++
		v, ok := m.(interface{ ValidateAll() error })
		if !ok {
			return fmt.Errorf("%s has no generated validation", m.ProtoReflect().Descriptor().FullName())
		}
		if err := v.ValidateAll(); err != nil {
			return fmt.Errorf("%s: %w", m.ProtoReflect().Descriptor().FullName(), err)
		}
		return nil
	}); err != nil {
		t.Fatalf("envoy.yaml: typed_config: %v", err)
	}
	if n < 4 {
		t.Fatalf("envoy.yaml: only %d typed_configs validated, want HCM, router, TLS context and protocol options", n)
	}

	var tlsCtx *tlsv3.UpstreamTlsContext
	pipe := ""
	for _, cl := range bs.GetStaticResources().GetClusters() {
		if ts := cl.GetTransportSocket(); ts != nil {
			tlsCtx = &tlsv3.UpstreamTlsContext{}
			if err := ts.GetTypedConfig().UnmarshalTo(tlsCtx); err != nil {
				t.Fatalf("cluster %s transport socket: %v", cl.GetName(), err)
			}
		}
		for _, ep := range cl.GetLoadAssignment().GetEndpoints() {
			for _, lb := range ep.GetLbEndpoints() {
				if p := lb.GetEndpoint().GetAddress().GetPipe(); p != nil {
					pipe = p.GetPath()
				}
			}
		}
	}
	if tlsCtx == nil {
		t.Fatal("envoy.yaml: no cluster with an mTLS transport socket")
	}
	common := tlsCtx.GetCommonTlsContext()
	secrets := common.GetTlsCertificateSdsSecretConfigs()
	if len(secrets) != 1 || secrets[0].GetName() != want.SecretName {
		t.Fatalf("envoy.yaml: SDS certificate secrets %v, want one named %q", secrets, want.SecretName)
	}
	if got := common.GetCombinedValidationContext().GetValidationContextSdsSecretConfig().GetName(); got != want.ValidationName {
		t.Fatalf("envoy.yaml: SDS validation context %q, want %q", got, want.ValidationName)
	}
	if pipe != want.SDSPipe {
		t.Fatalf("envoy.yaml: SDS cluster socket %q, but the agent serves SDS on %q", pipe, want.SDSPipe)
	}
}

// eachAny unpacks every google.protobuf.Any in m (recursively) and calls f on it.
func eachAny(m proto.Message, f func(proto.Message) error) error {
	if a, ok := m.(*anypb.Any); ok {
		inner, err := a.UnmarshalNew()
		if err != nil {
			return fmt.Errorf("%s: %w", a.GetTypeUrl(), err)
		}
		if err := f(inner); err != nil {
			return err
		}
		return eachAny(inner, f)
	}
	var err error
	m.ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Message() == nil {
			return true
		}
		visit := func(v protoreflect.Value) bool {
			err = eachAny(v.Message().Interface(), f)
			return err == nil
		}
		switch {
		case fd.IsList():
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				if !visit(l.Get(i)) {
					return false
				}
			}
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, mv protoreflect.Value) bool { return visit(mv) })
			}
		default:
			return visit(v)
		}
		return err == nil
	})
	return err
}
