package testbed

import (
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"

	"golang.org/x/net/dns/dnsmessage"
)

// DNS is the real node's cluster DNS: a small authoritative server on
// BridgeIP:53 inside the test's network namespace (there is no CoreDNS and
// nothing outside is reachable). It answers A queries for the names the test
// registers with Add — the node's name, kubernetes.default.svc.cluster.local,
// and e.g. a Service name an Envoy bootstrap dials — and NXDOMAIN for every
// other name. The kubelet gives pods with dnsPolicy ClusterFirst (the
// default) this server and the cluster.local search path.
type DNS struct {
	Addr string
	mu   sync.RWMutex
	a    map[string]net.IP // lower-case FQDN with the trailing dot
	conn net.PacketConn
	wg   sync.WaitGroup
}

func startDNS(host string) (*DNS, error) {
	pc, err := net.ListenPacket("udp", net.JoinHostPort(host, "53"))
	if err != nil {
		return nil, err
	}
	d := &DNS{Addr: pc.LocalAddr().String(), a: map[string]net.IP{}, conn: pc}
	d.wg.Add(1)
	go d.serve()
	return d, nil
}

// Add makes name (absolute, e.g. "httpbin.spire-sample.svc.cluster.local")
// resolve to the IPv4 address ip.
func (d *DNS) Add(name, ip string) error {
	v4 := net.ParseIP(ip).To4()
	if v4 == nil {
		return fmt.Errorf("dns: %q is not an IPv4 address", ip)
	}
	d.mu.Lock()
	d.a[fqdn(name)] = v4
	d.mu.Unlock()
	return nil
}

func fqdn(name string) string {
	name = strings.ToLower(name)
	if !strings.HasSuffix(name, ".") {
		name += "."
	}
	return name
}

// Close stops the server.
func (d *DNS) Close() {
	d.conn.Close()
	d.wg.Wait()
}

func (d *DNS) serve() {
	defer d.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := d.conn.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		if resp, err := d.answer(buf[:n]); err == nil {
			d.conn.WriteTo(resp, from)
		}
	}
}

func (d *DNS) answer(req []byte) ([]byte, error) {
	var p dnsmessage.Parser
	h, err := p.Start(req)
	if err != nil {
		return nil, err
	}
	q, err := p.Question()
	if err != nil {
		return nil, err
	}
	d.mu.RLock()
	ip, known := d.a[strings.ToLower(q.Name.String())]
	d.mu.RUnlock()
	rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired}
	if !known {
		rh.RCode = dnsmessage.RCodeNameError
	}
	b := dnsmessage.NewBuilder(nil, rh)
	b.EnableCompression()
	if err := b.StartQuestions(); err != nil {
		return nil, err
	}
	if err := b.Question(q); err != nil {
		return nil, err
	}
	if err := b.StartAnswers(); err != nil {
		return nil, err
	}
	if known && q.Type == dnsmessage.TypeA && q.Class == dnsmessage.ClassINET {
		var a [4]byte
		copy(a[:], ip)
		if err := b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 5}, dnsmessage.AResource{A: a}); err != nil {
			return nil, err
		}
	}
	// A known name without an address of the asked type (AAAA): NOERROR, no answer.
	return b.Finish()
}
