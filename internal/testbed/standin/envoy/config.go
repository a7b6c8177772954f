package main

import (
	"fmt"
	"net"
	"strconv"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"sigs.k8s.io/yaml"

	// typed_config types a bootstrap may name, registered for protojson.
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

const secretTypeURL = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// plan is what the stand-in does, read from the bootstrap.
type plan struct {
	admin     string
	listeners []listenerPlan
	clusters  map[string]*clusterPlan
	sds       []sdsSub
}

type listenerPlan struct {
	name  string
	addr  string
	vhost []*routev3.VirtualHost
}

// clusterPlan is an upstream cluster: where it is and how to talk TLS to it.
type clusterPlan struct {
	name           string
	host           string
	port           int
	v4Only         bool
	connectTimeout time.Duration
	tls            *tlsPlan
}

type tlsPlan struct {
	sni            string
	certNames      []string
	validationName string
	// static is the validation context of the bootstrap (the default of a
	// combined context, or a static one): its SAN matchers apply.
	static *tlsv3.CertificateValidationContext
}

// sdsSub is one secret subscription: a name on an SDS cluster's pipe.
type sdsSub struct {
	name                string
	cluster             string
	pipe                string
	initialFetchTimeout time.Duration
}

// loadBootstrap parses YAML into Envoy's Bootstrap (unknown fields are an
// error, as in Envoy) and runs the generated validation.
func loadBootstrap(raw []byte) (*bootstrapv3.Bootstrap, error) {
	js, err := yaml.YAMLToJSON(raw)
	if err != nil {
		return nil, err
	}
	bs := &bootstrapv3.Bootstrap{}
	if err := protojson.Unmarshal(js, bs); err != nil {
		return nil, fmt.Errorf("unable to parse JSON as proto: %w", err)
	}
	if err := bs.ValidateAll(); err != nil {
		return nil, fmt.Errorf("proto constraint validation failed: %w", err)
	}
	return bs, nil
}

func socketAddr(a *corev3.Address) (string, error) {
	sa := a.GetSocketAddress()
	if sa == nil {
		return "", fmt.Errorf("address %v: only socket_address is supported here", a)
	}
	return net.JoinHostPort(sa.GetAddress(), strconv.Itoa(int(sa.GetPortValue()))), nil
}

func planFrom(bs *bootstrapv3.Bootstrap) (*plan, error) {
	p := &plan{clusters: map[string]*clusterPlan{}}
	if a := bs.GetAdmin().GetAddress(); a != nil {
		addr, err := socketAddr(a)
		if err != nil {
			return nil, fmt.Errorf("admin: %w", err)
		}
		p.admin = addr
	}
	pipes := map[string]string{}
	sr := bs.GetStaticResources()
	for _, cl := range sr.GetClusters() {
		switch cl.GetType() {
		case clusterv3.Cluster_STATIC, clusterv3.Cluster_LOGICAL_DNS, clusterv3.Cluster_STRICT_DNS:
		default:
			return nil, fmt.Errorf("cluster %s: type %s is not supported here (STATIC, LOGICAL_DNS, STRICT_DNS)", cl.GetName(), cl.GetType())
		}
		cp := &clusterPlan{name: cl.GetName(), v4Only: cl.GetDnsLookupFamily() == clusterv3.Cluster_V4_ONLY, connectTimeout: 5 * time.Second}
		if d := cl.GetConnectTimeout(); d != nil {
			cp.connectTimeout = d.AsDuration()
		}
		for _, ep := range cl.GetLoadAssignment().GetEndpoints() {
			for _, lb := range ep.GetLbEndpoints() {
				addr := lb.GetEndpoint().GetAddress()
				if pipe := addr.GetPipe(); pipe != nil {
					pipes[cl.GetName()] = pipe.GetPath()
				}
				if sa := addr.GetSocketAddress(); sa != nil && cp.host == "" {
					cp.host, cp.port = sa.GetAddress(), int(sa.GetPortValue())
				}
			}
		}
		if ts := cl.GetTransportSocket(); ts != nil {
			utc := &tlsv3.UpstreamTlsContext{}
			if err := ts.GetTypedConfig().UnmarshalTo(utc); err != nil {
				return nil, fmt.Errorf("cluster %s: transport socket: only UpstreamTlsContext is supported: %w", cl.GetName(), err)
			}
			tp, err := tlsPlanFrom(utc)
			if err != nil {
				return nil, fmt.Errorf("cluster %s: %w", cl.GetName(), err)
			}
			cp.tls = tp
		}
		p.clusters[cp.name] = cp
	}

	// The SDS subscriptions, with their pipes.
	seen := map[string]bool{}
	for _, cl := range sr.GetClusters() {
		ts := cl.GetTransportSocket()
		if ts == nil {
			continue
		}
		utc := &tlsv3.UpstreamTlsContext{}
		_ = ts.GetTypedConfig().UnmarshalTo(utc)
		common := utc.GetCommonTlsContext()
		configs := append([]*tlsv3.SdsSecretConfig{}, common.GetTlsCertificateSdsSecretConfigs()...)
		if v := common.GetCombinedValidationContext().GetValidationContextSdsSecretConfig(); v != nil {
			configs = append(configs, v)
		}
		if v := common.GetValidationContextSdsSecretConfig(); v != nil {
			configs = append(configs, v)
		}
		for _, sc := range configs {
			if seen[sc.GetName()] {
				continue
			}
			seen[sc.GetName()] = true
			src := sc.GetSdsConfig()
			if src == nil {
				return nil, fmt.Errorf("cluster %s: secret %q has no sds_config (static secrets are not supported here)", cl.GetName(), sc.GetName())
			}
			svcs := src.GetApiConfigSource().GetGrpcServices()
			if len(svcs) == 0 || svcs[0].GetEnvoyGrpc() == nil {
				return nil, fmt.Errorf("cluster %s: secret %q: only api_config_source GRPC with envoy_grpc is supported here", cl.GetName(), sc.GetName())
			}
			sdsCluster := svcs[0].GetEnvoyGrpc().GetClusterName()
			pipe, ok := pipes[sdsCluster]
			if !ok {
				return nil, fmt.Errorf("cluster %s: secret %q: SDS cluster %q is not a static cluster with a pipe address", cl.GetName(), sc.GetName(), sdsCluster)
			}
			timeout := 15 * time.Second // Envoy's default initial_fetch_timeout
			if d := src.GetInitialFetchTimeout(); d != nil {
				timeout = d.AsDuration()
			}
			p.sds = append(p.sds, sdsSub{name: sc.GetName(), cluster: sdsCluster, pipe: pipe, initialFetchTimeout: timeout})
		}
	}

	for _, l := range sr.GetListeners() {
		addr, err := socketAddr(l.GetAddress())
		if err != nil {
			return nil, fmt.Errorf("listener %s: %w", l.GetName(), err)
		}
		lp := listenerPlan{name: l.GetName(), addr: addr}
		for _, fc := range l.GetFilterChains() {
			for _, f := range fc.GetFilters() {
				hcm := &hcmv3.HttpConnectionManager{}
				if err := f.GetTypedConfig().UnmarshalTo(hcm); err != nil {
					return nil, fmt.Errorf("listener %s: only the HTTP connection manager is supported here: %w", l.GetName(), err)
				}
				for _, hf := range hcm.GetHttpFilters() {
					if hf.GetName() != "envoy.filters.http.router" {
						return nil, fmt.Errorf("listener %s: http filter %s is not supported here (router only)", l.GetName(), hf.GetName())
					}
				}
				rc := hcm.GetRouteConfig()
				if rc == nil {
					return nil, fmt.Errorf("listener %s: only an inline route_config is supported here", l.GetName())
				}
				lp.vhost = append(lp.vhost, rc.GetVirtualHosts()...)
			}
		}
		for _, vh := range lp.vhost {
			for _, r := range vh.GetRoutes() {
				if c := r.GetRoute().GetCluster(); c != "" {
					if _, ok := p.clusters[c]; !ok {
						return nil, fmt.Errorf("listener %s: route to unknown cluster %q", l.GetName(), c)
					}
				}
			}
		}
		p.listeners = append(p.listeners, lp)
	}
	return p, nil
}

func tlsPlanFrom(utc *tlsv3.UpstreamTlsContext) (*tlsPlan, error) {
	common := utc.GetCommonTlsContext()
	tp := &tlsPlan{sni: utc.GetSni()}
	for _, sc := range common.GetTlsCertificateSdsSecretConfigs() {
		tp.certNames = append(tp.certNames, sc.GetName())
	}
	if len(common.GetTlsCertificates()) > 0 {
		return nil, fmt.Errorf("static tls_certificates are not supported here (SDS only)")
	}
	switch {
	case common.GetCombinedValidationContext() != nil:
		cvc := common.GetCombinedValidationContext()
		tp.validationName = cvc.GetValidationContextSdsSecretConfig().GetName()
		tp.static = cvc.GetDefaultValidationContext()
	case common.GetValidationContextSdsSecretConfig() != nil:
		tp.validationName = common.GetValidationContextSdsSecretConfig().GetName()
	case common.GetValidationContext() != nil:
		return nil, fmt.Errorf("a static validation_context is not supported here (SDS only)")
	}
	return tp, nil
}
