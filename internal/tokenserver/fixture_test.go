package tokenserver_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clocktesting "k8s.io/utils/clock/testing"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/credential"
	"github.com/keysmith-dev/keysmith/internal/signingkey"
	"github.com/keysmith-dev/keysmith/internal/tokenserver"
)

// fixture is a token server on a loopback port, fed directly through its Store (the
// informer wiring is tested against a real API server in test/integration).
type fixture struct {
	t     testing.TB
	store *tokenserver.Store
	srv   *tokenserver.Server
	ts    *httptest.Server
	clock *clocktesting.FakeClock
	usage *usageLog
	keys  *signingkey.Set
}

func newFixture(t testing.TB, mutate ...func(*tokenserver.Options)) *fixture {
	t.Helper()
	f := &fixture{t: t, store: tokenserver.NewStore(), clock: clocktesting.NewFakeClock(time.Now().Truncate(time.Second)), usage: &usageLog{}}
	f.ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { f.srv.Handler().ServeHTTP(w, r) }))
	t.Cleanup(f.ts.Close)
	opts := tokenserver.Options{Issuer: f.ts.URL, Clock: f.clock, Usage: f.usage, TokenLifetime: 10 * time.Minute}
	for _, m := range mutate {
		m(&opts)
	}
	f.srv = tokenserver.New(f.store, opts)
	key, err := signingkey.Generate(f.clock.Now(), f.clock.Now())
	if err != nil {
		t.Fatal(err)
	}
	f.keys = &signingkey.Set{Keys: []signingkey.Key{key}}
	if err := f.srv.SetKeys(f.keys); err != nil {
		t.Fatal(err)
	}
	f.srv.SetReady()
	for _, def := range catalog() {
		f.store.SetAPI(def)
	}
	return f
}

// catalog is the seeds' catalog: Profile API (Workspace, read-only), Platform API
// (Account, user and admin), Data Planning API (Workspace, read-only and admin).
func catalog() []*iamv1alpha1.APIDefinition {
	def := func(name string, level iamv1alpha1.ScopeLevel, perms ...iamv1alpha1.Permission) *iamv1alpha1.APIDefinition {
		return &iamv1alpha1.APIDefinition{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: iamv1alpha1.APIDefinitionSpec{DisplayName: name, ScopeLevel: level, Permissions: perms}}
	}
	return []*iamv1alpha1.APIDefinition{
		def("profile-api", iamv1alpha1.ScopeLevelWorkspace, iamv1alpha1.Permission{Name: "read-only", Methods: []string{"GET", "HEAD"}}),
		def("platform-api", iamv1alpha1.ScopeLevelAccount,
			iamv1alpha1.Permission{Name: "user", Methods: []string{"GET", "HEAD", "POST"}},
			iamv1alpha1.Permission{Name: "admin", Methods: []string{"*"}}),
		def("dataplanning-api", iamv1alpha1.ScopeLevelWorkspace,
			iamv1alpha1.Permission{Name: "read-only", Methods: []string{"GET"}},
			iamv1alpha1.Permission{Name: "admin", Methods: []string{"*"}}),
	}
}

// client is an issued credential as a workload holds it.
type client struct {
	obj    *iamv1alpha1.APICredential
	id     string
	secret string
}

// issue records an issued APICredential in the store, as the operator would have.
func (f *fixture) issue(name string, apis []iamv1alpha1.APIGrant, mutate ...func(*iamv1alpha1.APICredential)) *client {
	f.t.Helper()
	id, err := credential.NewClientID()
	if err != nil {
		f.t.Fatal(err)
	}
	secret, err := credential.NewSecret()
	if err != nil {
		f.t.Fatal(err)
	}
	obj := &iamv1alpha1.APICredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: name, UID: types.UID("uid-" + name)},
		Spec:       iamv1alpha1.APICredentialSpec{APIs: apis, Scope: iamv1alpha1.CredentialScope{Workspaces: []string{"eu-1", "us-2"}}},
		Status:     iamv1alpha1.APICredentialStatus{ClientID: id, SecretHash: credential.Hash(secret), Account: "acme"},
	}
	for _, m := range mutate {
		m(obj)
	}
	f.store.SetCredential(obj)
	return &client{obj: obj, id: id, secret: secret}
}

// update changes the credential as a watch event would.
func (f *fixture) update(c *client, mutate func(*iamv1alpha1.APICredential)) {
	mutate(c.obj)
	f.store.SetCredential(c.obj.DeepCopy())
}

// rotate gives the credential a new secret, keeping the old one for grace.
func (f *fixture) rotate(c *client, grace time.Duration) (oldSecret string) {
	f.t.Helper()
	oldSecret = c.secret
	newSecret, err := credential.NewSecret()
	if err != nil {
		f.t.Fatal(err)
	}
	f.update(c, func(o *iamv1alpha1.APICredential) {
		o.Status.PreviousSecrets = []iamv1alpha1.PreviousSecret{{Hash: o.Status.SecretHash, ExpiresAt: metav1.NewTime(f.clock.Now().Add(grace))}}
		o.Status.SecretHash = credential.Hash(newSecret)
	})
	c.secret = newSecret
	return oldSecret
}

func (f *fixture) config(c *client, style oauth2.AuthStyle, scopes ...string) *clientcredentials.Config {
	return &clientcredentials.Config{ClientID: c.id, ClientSecret: c.secret, TokenURL: f.ts.URL + "/oauth2/token", AuthStyle: style, Scopes: scopes}
}

// token obtains an access token through golang.org/x/oauth2/clientcredentials.
func (f *fixture) token(c *client, scopes ...string) string {
	f.t.Helper()
	tok, err := f.config(c, oauth2.AuthStyleInHeader, scopes...).Token(context.Background())
	if err != nil {
		f.t.Fatalf("token: %v", err)
	}
	return tok.AccessToken
}

// post sends a form to path with optional Basic credentials and returns the response
// with its JSON body decoded.
func (f *fixture) post(path string, form url.Values, basicID, basicSecret string) (*http.Response, map[string]any) {
	f.t.Helper()
	req, err := http.NewRequest(http.MethodPost, f.ts.URL+path, strings.NewReader(form.Encode()))
	if err != nil {
		f.t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	if basicID != "" {
		req.SetBasicAuth(url.QueryEscape(basicID), url.QueryEscape(basicSecret))
	}
	return f.do(req)
}

func (f *fixture) do(req *http.Request) (*http.Response, map[string]any) {
	f.t.Helper()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	body := map[string]any{}
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp, body
}

func grants(pairs ...string) []iamv1alpha1.APIGrant {
	var g []iamv1alpha1.APIGrant
	for _, p := range pairs {
		api, perm, _ := strings.Cut(p, ":")
		g = append(g, iamv1alpha1.APIGrant{Name: api, Permission: perm})
	}
	return g
}

// usageLog records what the server reports as used.
type usageLog struct {
	mu    sync.Mutex
	names []string
	addrs []string
}

func (u *usageLog) Record(c *tokenserver.Credential, addr string, _ time.Time) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.names = append(u.names, c.Name)
	u.addrs = append(u.addrs, addr)
}

func (u *usageLog) count() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return len(u.names)
}
