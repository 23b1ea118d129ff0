package tokenserver_test

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authnv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/testenv"
	"github.com/keysmith-dev/keysmith/internal/tokenserver"
)

// testCert is a certificate and its key, signed by a CA of the test.
type testCert struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// tls is the certificate as a TLS client presents it, followed by the chain given.
func (c testCert) tls(chain ...testCert) tls.Certificate {
	der := [][]byte{c.cert.Raw}
	for _, ch := range chain {
		der = append(der, ch.cert.Raw)
	}
	return tls.Certificate{Certificate: der, PrivateKey: c.key, Leaf: c.cert}
}

func (c testCert) pem(t *testing.T) (certPEM, keyPEM []byte) {
	t.Helper()
	der, err := x509.MarshalECPrivateKey(c.key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: c.cert.Raw}),
		pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})
}

// newTestCert makes a certificate for cn signed by parent (self-signed CA when nil).
func newTestCert(t *testing.T, parent *testCert, cn string, usage ...x509.ExtKeyUsage) testCert {
	return makeTestCert(t, parent, cn, parent == nil, time.Now().Add(time.Hour), usage...)
}

// makeTestCert makes a certificate for cn signed by parent (self-signed when nil), a CA
// or not, valid from an hour ago until notAfter.
func makeTestCert(t *testing.T, parent *testCert, cn string, ca bool, notAfter time.Time, usage ...x509.ExtKeyUsage) testCert {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter,
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: usage,
	}
	if ca {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage |= x509.KeyUsageCertSign
	}
	signer, signerKey := tmpl, key
	if parent != nil {
		signer, signerKey = parent.cert, parent.key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, signer, &key.PublicKey, signerKey)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return testCert{cert: cert, key: key}
}

// TestTokenReviewNeedsTheAPIServersClientCertificate: with ReviewClientCAs, TokenReview is
// answered only for a client whose TLS certificate (client-auth usage) chains to them,
// which is how the API server authenticates to its token webhook; anyone else who can
// reach the endpoint gets 403 and no token is verified for them. A real kube-apiserver,
// given the certificate in its webhook kubeconfig, logs the credential in.
func TestTokenReviewNeedsTheAPIServersClientCertificate(t *testing.T) {
	ca := newTestCert(t, nil, "keysmith reviewers CA")
	rogueCA := newTestCert(t, nil, "another CA")
	apiserver := newTestCert(t, &ca, "kube-apiserver", x509.ExtKeyUsageClientAuth)
	serverUsage := newTestCert(t, &ca, "kube-apiserver", x509.ExtKeyUsageServerAuth)
	rogue := newTestCert(t, &rogueCA, "kube-apiserver", x509.ExtKeyUsageClientAuth)
	expired := makeTestCert(t, &ca, "kube-apiserver", false, time.Now().Add(-time.Minute), x509.ExtKeyUsageClientAuth)
	intermediate := makeTestCert(t, &ca, "keysmith reviewers intermediate", true, time.Now().Add(time.Hour))
	viaIntermediate := newTestCert(t, &intermediate, "kube-apiserver", x509.ExtKeyUsageClientAuth)
	serverIntermediate := makeTestCert(t, &ca, "server-only intermediate", true, time.Now().Add(time.Hour), x509.ExtKeyUsageServerAuth)
	viaServerIntermediate := newTestCert(t, &serverIntermediate, "kube-apiserver", x509.ExtKeyUsageClientAuth)
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)

	var f *fixture
	ts := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { f.srv.Handler().ServeHTTP(w, r) }))
	ts.TLS = &tls.Config{MinVersion: tls.VersionTLS12}
	tokenserver.ReviewTLSConfig(ts.TLS)
	ts.StartTLS()
	t.Cleanup(ts.Close)
	f = newFixture(t, func(o *tokenserver.Options) { o.ReviewClientCAs = func() *x509.CertPool { return pool } })

	dir := t.TempDir()
	certPEM, keyPEM := apiserver.pem(t)
	serverCA := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: ts.Certificate().Raw})
	kubeconfig := strings.Replace(tokenserver.WebhookKubeconfig(ts.URL), "  cluster:\n", "  cluster:\n    certificate-authority: "+filepath.Join(dir, "server-ca.pem")+"\n", 1)
	kubeconfig = strings.Replace(kubeconfig, "- name: kube-apiserver\n", "- name: kube-apiserver\n  user:\n    client-certificate: "+
		filepath.Join(dir, "client.pem")+"\n    client-key: "+filepath.Join(dir, "client-key.pem")+"\n", 1)
	for name, data := range map[string][]byte{"server-ca.pem": serverCA, "client.pem": certPEM, "client-key.pem": keyPEM, "webhook.kubeconfig": []byte(kubeconfig)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	_, cfg := testenv.StartT(t, func(env *envtest.Environment) {
		api := env.ControlPlane.GetAPIServer().Configure()
		api.Set("authentication-token-webhook-config-file", filepath.Join(dir, "webhook.kubeconfig"))
		api.Set("authentication-token-webhook-version", "v1")
		api.Set("authentication-token-webhook-cache-ttl", "1s")
	})
	ctx := context.Background()
	// The Kubernetes API's audience is the API server's issuer.
	audience, err := testenv.APIServerIssuer(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	f.store.SetAPI(&iamv1alpha1.APIDefinition{ObjectMeta: metav1.ObjectMeta{Name: "kubernetes"}, Spec: iamv1alpha1.APIDefinitionSpec{
		DisplayName: "Kubernetes", ScopeLevel: iamv1alpha1.ScopeLevelAccount, Audience: audience,
		Permissions: []iamv1alpha1.Permission{{Name: "user", Methods: []string{"*"}}}}})
	c := f.issue("ops", grants("kubernetes:user"))
	token := f.token(c)

	review := func(url string, cert *tls.Certificate) (int, authnv1.TokenReviewStatus) {
		t.Helper()
		roots := x509.NewCertPool()
		roots.AddCert(ts.Certificate())
		tc := &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
		if cert != nil {
			tc.Certificates = []tls.Certificate{*cert}
		}
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: tc}, Timeout: 10 * time.Second}
		body, _ := json.Marshal(authnv1.TokenReview{
			TypeMeta: metav1.TypeMeta{APIVersion: "authentication.k8s.io/v1", Kind: "TokenReview"},
			Spec:     authnv1.TokenReviewSpec{Token: token, Audiences: []string{audience}},
		})
		resp, err := hc.Post(url+"/apis/authentication.k8s.io/v1/tokenreviews", "application/json", bytes.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var out authnv1.TokenReview
		_ = json.NewDecoder(resp.Body).Decode(&out)
		return resp.StatusCode, out.Status
	}
	certOf := func(c testCert, chain ...testCert) *tls.Certificate { tc := c.tls(chain...); return &tc }
	for _, tc := range []struct {
		name string
		url  string
		cert *tls.Certificate
	}{
		{"over plain HTTP", f.ts.URL, nil},
		{"without a client certificate", ts.URL, nil},
		{"with a certificate of another CA", ts.URL, certOf(rogue)},
		{"with a server certificate of the CA", ts.URL, certOf(serverUsage)},
		{"with an expired certificate of the CA", ts.URL, certOf(expired)},
		{"with a certificate of an intermediate it does not send", ts.URL, certOf(viaIntermediate)},
		{"through an intermediate for servers only", ts.URL, certOf(viaServerIntermediate, serverIntermediate)},
	} {
		if code, st := review(tc.url, tc.cert); code != http.StatusForbidden || st.Authenticated {
			t.Errorf("TokenReview %s: %d %+v, want 403", tc.name, code, st)
		}
	}
	for _, tc := range []struct {
		name string
		cert *tls.Certificate
	}{
		{"with the API server's certificate", certOf(apiserver)},
		{"through an intermediate it sends", certOf(viaIntermediate, intermediate)},
	} {
		if code, st := review(ts.URL, tc.cert); code != http.StatusOK || !st.Authenticated {
			t.Errorf("TokenReview %s: %d %+v, want 200 authenticated", tc.name, code, st)
		}
	}
	// The other endpoints serve clients without certificates as before.
	if resp, _ := (&http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: func() *x509.CertPool {
		p := x509.NewCertPool()
		p.AddCert(ts.Certificate())
		return p
	}()}}}).Get(ts.URL + "/healthz"); resp == nil || resp.StatusCode != http.StatusOK {
		t.Errorf("/healthz over TLS without a client certificate: %v", resp)
	}

	// Through the real API server, which presents the certificate of its webhook kubeconfig.
	cs, err := kubernetes.NewForConfig(&rest.Config{Host: cfg.Host, BearerToken: token, TLSClientConfig: rest.TLSClientConfig{CAData: cfg.CAData}})
	if err != nil {
		t.Fatal(err)
	}
	ssr, err := cs.AuthenticationV1().SelfSubjectReviews().Create(ctx, &authnv1.SelfSubjectReview{}, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("logging in to kube-apiserver with a keysmith token: %v", err)
	}
	if want := tokenserver.UsernamePrefix + "team-a:ops"; ssr.Status.UserInfo.Username != want {
		t.Errorf("kube-apiserver's user: %q, want %q", ssr.Status.UserInfo.Username, want)
	}
}
