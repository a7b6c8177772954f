// Command xfccecho is the test bed's upstream service: an httpbin-like echo
// server behind mTLS with a SPIFFE SVID. It accepts only clients with an
// X.509 SVID of the trust domain (verified against the SPIRE bundle) and
// answers GET /headers with the request headers and the
// X-Forwarded-Client-Cert an Envoy in front of httpbin would add:
//
//	By=<server SPIFFE ID>;Hash=<hex sha256 of the client certificate DER>;URI=<client SPIFFE ID>
//
// The SVID files come from `spire-server x509 mint -write DIR` (svid.pem,
// key.pem, bundle.pem).
//
//	xfccecho -listen 10.88.0.1:8443 -cert svid.pem -key key.pem -bundle bundle.pem
package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sort"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8443", "address to listen on")
	certPath := flag.String("cert", "svid.pem", "the server's X.509 SVID (PEM, leaf first)")
	keyPath := flag.String("key", "key.pem", "the SVID's private key (PEM)")
	bundlePath := flag.String("bundle", "bundle.pem", "the trust domain's X.509 bundle (PEM)")
	flag.Parse()
	log.SetFlags(log.LstdFlags | log.Lmicroseconds)
	if err := run(*listen, *certPath, *keyPath, *bundlePath); err != nil {
		log.Fatalf("xfccecho: %v", err)
	}
}

func run(listen, certPath, keyPath, bundlePath string) error {
	svid, err := x509svid.Load(certPath, keyPath)
	if err != nil {
		return err
	}
	td := svid.ID.TrustDomain()
	bundle, err := x509bundle.Load(td, bundlePath)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", listen)
	if err != nil {
		return err
	}
	srv := &http.Server{
		TLSConfig:         tlsconfig.MTLSServerConfig(svid, bundle, tlsconfig.AuthorizeMemberOf(td)),
		ReadHeaderTimeout: 10 * time.Second,
		Handler:           handler(svid.ID),
		ErrorLog:          log.New(os.Stderr, "xfccecho: ", log.LstdFlags|log.Lmicroseconds),
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	log.Printf("xfccecho: serving %s on %s (clients of %s)", svid.ID, ln.Addr(), td)
	if err := srv.ServeTLS(ln, "", ""); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func handler(self spiffeid.ID) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/headers", func(w http.ResponseWriter, r *http.Request) {
		if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 {
			http.Error(w, "no client certificate", http.StatusForbidden)
			return
		}
		peer := r.TLS.PeerCertificates[0]
		clientID, err := x509svid.IDFromCert(peer)
		if err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		sum := sha256.Sum256(peer.Raw)
		headers := map[string]string{}
		keys := make([]string, 0, len(r.Header))
		for k := range r.Header {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			headers[k] = r.Header.Get(k)
		}
		headers["Host"] = r.Host
		headers["X-Forwarded-Client-Cert"] = fmt.Sprintf("By=%s;Hash=%s;URI=%s", self, hex.EncodeToString(sum[:]), clientID)
		body, _ := json.MarshalIndent(map[string]any{"headers": headers}, "", "  ")
		w.Header().Set("Content-Type", "application/json")
		w.Write(append(body, '\n'))
		log.Printf("xfccecho: GET /headers from %s (%s)", clientID, r.RemoteAddr)
	})
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintln(w, "ok") })
	return mux
}
