package tokenserver_test

import (
	"context"
	"net/http"
	"net/url"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/ptr"
	ctrlclient "sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/testenv"
	"github.com/keysmith-dev/keysmith/internal/tokenserver"
)

// TestJWTBearerWithTokenRequest exchanges a projected ServiceAccount token minted by the
// real API server's TokenRequest (audience = the token server's issuer) for an access
// token, with no client secret anywhere, and refuses every other case with one
// invalid_grant.
func TestJWTBearerWithTokenRequest(t *testing.T) {
	ctx := context.Background()
	// envtest's kube-apiserver serves the service-account issuer discovery and signs
	// TokenRequest tokens.
	env, cfg := testenv.StartT(t)
	cs := kubernetes.NewForConfigOrDie(cfg)
	for _, ns := range []string{"team-a", "team-b"} {
		if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, sa := range []struct{ ns, name string }{{"team-a", "worker"}, {"team-a", "other"}, {"team-b", "worker"}} {
		if _, err := cs.CoreV1().ServiceAccounts(sa.ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: sa.name}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mint := func(ns, name, audience string) (string, time.Time) {
		t.Helper()
		tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{
			Spec: authenticationv1.TokenRequestSpec{Audiences: []string{audience}, ExpirationSeconds: ptr.To[int64](600)},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return tr.Status.Token, tr.Status.ExpirationTimestamp.Time
	}

	// The token server reads the issuer's keys as its own ServiceAccount, with no role of
	// its own: Kubernetes' default ClusterRoleBinding system:service-account-issuer-discovery
	// lets every ServiceAccount read them.
	tsUser, err := env.ControlPlane.AddUser(envtest.User{Name: "system:serviceaccount:keysmith-system:keysmith-token-server",
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:keysmith-system", "system:authenticated"}}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	issuer, err := tokenserver.NewServiceAccountIssuer(tsUser.Config(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := issuer.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	t.Logf("service-account issuer of the API server: %s", issuer.Issuer())
	f := newFixture(t, func(o *tokenserver.Options) {
		o.WorkloadIdentity = issuer
		o.FailureRate, o.FailureBurst = 1, 100 // the refusals below are one client's; the limiter is checked last
	})
	// A credential used only by its workloads: a client ID and no secret (spec.issueSecret: false).
	wi := f.issue("wi", grants("profile-api:read-only"), func(o *iamv1alpha1.APICredential) {
		o.Spec.IssueSecret = ptr.To(false)
		o.Spec.WorkloadIdentity = &iamv1alpha1.WorkloadIdentity{ServiceAccounts: []string{"worker"}}
		o.Status.SecretHash = ""
	})
	rs := f.issue("rs", grants("platform-api:user"))

	exchange := func(clientID, assertion string) (int, map[string]any) {
		t.Helper()
		resp, body := f.post("/oauth2/token", url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"},
			"client_id": {clientID}, "assertion": {assertion}}, "", "")
		return resp.StatusCode, body
	}
	refused := func(what string, code int, body map[string]any) {
		t.Helper()
		if code != 400 || body["error"] != "invalid_grant" || body["access_token"] != nil {
			t.Errorf("%s: %d %v, want 400 invalid_grant", what, code, body)
		}
	}

	podToken, exp := mint("team-a", "worker", f.ts.URL)
	code, body := exchange(wi.id, podToken)
	if code != 200 || body["access_token"] == nil {
		t.Fatalf("exchange of worker's projected token: %d %v", code, body)
	}
	access := body["access_token"].(string)
	// ks_sv stays "wi", what older token servers accept through a rolling upgrade, and
	// ks_wi names the ServiceAccount the token dies with.
	if claims := claimsOf(t, access); claims.SecretVersion != "wi" || claims.WorkloadServiceAccount != "worker" {
		t.Errorf("the exchanged token's ks_sv %q and ks_wi %q, want wi and worker", claims.SecretVersion, claims.WorkloadServiceAccount)
	}
	_, intro := f.post("/oauth2/introspect", url.Values{"token": {access}}, rs.id, rs.secret)
	if intro["active"] != true || intro["client_id"] != wi.id {
		t.Errorf("introspection of the exchanged token: %v", intro)
	}

	// No client secret authenticates a credential without one, the empty one included.
	for _, secret := range []string{"", "x", rs.secret} {
		resp, body := f.post("/oauth2/token", url.Values{"grant_type": {"client_credentials"}, "client_id": {wi.id}, "client_secret": {secret}}, "", "")
		if resp.StatusCode != 401 || body["error"] != "invalid_client" {
			t.Errorf("client_credentials with a %d-byte secret for a secretless credential: %d %v", len(secret), resp.StatusCode, body)
		}
	}
	// The JWT-bearer grant takes no secret besides the assertion.
	resp, body := f.post("/oauth2/token", url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"},
		"client_id": {wi.id}, "assertion": {podToken}}, rs.id, rs.secret)
	if resp.StatusCode != 400 || body["error"] != "invalid_request" {
		t.Errorf("jwt-bearer with Basic credentials: %d %v", resp.StatusCode, body)
	}

	other, _ := mint("team-a", "other", f.ts.URL)
	code, body = exchange(wi.id, other)
	refused("another ServiceAccount of the namespace", code, body)

	otherNS, _ := mint("team-b", "worker", f.ts.URL)
	code, body = exchange(wi.id, otherNS)
	refused("a ServiceAccount of the same name in another namespace", code, body)

	otherAud, _ := mint("team-a", "worker", "https://api.example.com")
	code, body = exchange(wi.id, otherAud)
	refused("another audience", code, body)

	code, body = exchange(rs.id, podToken)
	refused("a credential without workloadIdentity", code, body)

	code, body = exchange(wi.id, podToken[:len(podToken)-4]+"AAAA")
	refused("a tampered signature", code, body)

	code, body = exchange(wi.id, strings.Repeat("x", 100))
	refused("garbage", code, body)

	// Removing one ServiceAccount of two refuses the tokens it obtained, and only those.
	f.update(wi, func(o *iamv1alpha1.APICredential) {
		o.Spec.WorkloadIdentity = &iamv1alpha1.WorkloadIdentity{ServiceAccounts: []string{"worker", "other"}}
	})
	code, body = exchange(wi.id, other)
	if code != 200 || body["access_token"] == nil {
		t.Fatalf("exchange of other's projected token once it is listed: %d %v", code, body)
	}
	otherAccess := body["access_token"].(string)
	active := func(token string) bool {
		t.Helper()
		_, intro := f.post("/oauth2/introspect", url.Values{"token": {token}}, rs.id, rs.secret)
		return intro["active"] == true
	}
	if !active(otherAccess) || !active(access) {
		t.Error("the tokens of both listed ServiceAccounts must be active")
	}
	f.update(wi, func(o *iamv1alpha1.APICredential) {
		o.Spec.WorkloadIdentity = &iamv1alpha1.WorkloadIdentity{ServiceAccounts: []string{"worker"}}
	})
	if active(otherAccess) {
		t.Error("a token obtained by a ServiceAccount removed from the credential is still active")
	}
	if !active(access) {
		t.Error("removing one ServiceAccount refused the token of another that is still listed")
	}
	code, body = exchange(wi.id, other)
	refused("the removed ServiceAccount", code, body)

	// Removing the ServiceAccount refuses the next exchange and the tokens already out.
	f.update(wi, func(o *iamv1alpha1.APICredential) { o.Spec.WorkloadIdentity = nil })
	code, body = exchange(wi.id, podToken)
	refused("after workloadIdentity was removed", code, body)
	if _, intro := f.post("/oauth2/introspect", url.Values{"token": {access}}, rs.id, rs.secret); intro["active"] != false {
		t.Errorf("a token of the removed workload identity is still active: %v", intro)
	}
	f.update(wi, func(o *iamv1alpha1.APICredential) {
		o.Spec.WorkloadIdentity = &iamv1alpha1.WorkloadIdentity{ServiceAccounts: []string{"worker"}}
	})
	if code, body = exchange(wi.id, podToken); code != 200 {
		t.Errorf("after workloadIdentity was restored: %d %v", code, body)
	}

	// Expired: TokenRequest issues no token shorter than 10 minutes, so the token server's
	// clock moves past exp and the leeway.
	f.clock.SetTime(exp.Add(31 * time.Second))
	code, body = exchange(wi.id, podToken)
	refused("an expired token", code, body)
	// And back before iat (minus the leeway): not yet valid.
	f.clock.SetTime(exp.Add(-20 * time.Minute))
	code, body = exchange(wi.id, podToken)
	refused("a token used before its iat", code, body)

	// Failures are counted by the failure limiter like wrong secrets: past the burst, 429.
	f.clock.SetTime(exp.Add(-9 * time.Minute))
	var last int
	for range 120 {
		last, _ = exchange(wi.id, other)
	}
	if last != 429 {
		t.Errorf("after 120 refused assertions of one client and address: %d, want 429", last)
	}

	// The metadata lists the grant.
	resp, meta := f.do(httpGet(t, f.ts.URL+"/.well-known/oauth-authorization-server"))
	if resp.StatusCode != 200 || !strings.Contains(strings.Join(toStrings(meta["grant_types_supported"]), " "), "urn:ietf:params:oauth:grant-type:jwt-bearer") {
		t.Errorf("metadata grant_types_supported: %v", meta["grant_types_supported"])
	}
}

// TestWorkloadIdentityCEL checks the CRD's rules on spec.issueSecret against the API server.
func TestWorkloadIdentityCEL(t *testing.T) {
	ctx := context.Background()
	_, cfg := testenv.StartT(t)
	c, err := ctrlclient.New(cfg, ctrlclient.Options{Scheme: testenv.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a"}}); err != nil {
		t.Fatal(err)
	}
	cred := func(name string, mutate func(*iamv1alpha1.APICredentialSpec)) *iamv1alpha1.APICredential {
		o := &iamv1alpha1.APICredential{ObjectMeta: metav1.ObjectMeta{Namespace: "team-a", Name: name},
			Spec: iamv1alpha1.APICredentialSpec{APIs: grants("profile-api:read-only")}}
		mutate(&o.Spec)
		return o
	}
	wantInvalid := func(what string, err error, msg string) {
		t.Helper()
		if !apierrors.IsInvalid(err) || !strings.Contains(err.Error(), msg) {
			t.Errorf("%s: %v, want Invalid with %q", what, err, msg)
		}
	}
	err = c.Create(ctx, cred("nosecret", func(s *iamv1alpha1.APICredentialSpec) { s.IssueSecret = ptr.To(false) }))
	wantInvalid("issueSecret false without workloadIdentity", err, "spec.issueSecret: false needs spec.workloadIdentity")

	err = c.Create(ctx, cred("badsa", func(s *iamv1alpha1.APICredentialSpec) {
		s.WorkloadIdentity = &iamv1alpha1.WorkloadIdentity{ServiceAccounts: []string{"Not_A_Name"}}
	}))
	wantInvalid("a ServiceAccount name that is not DNS-1123", err, "serviceAccounts")

	err = c.Create(ctx, cred("dup", func(s *iamv1alpha1.APICredentialSpec) {
		s.WorkloadIdentity = &iamv1alpha1.WorkloadIdentity{ServiceAccounts: []string{"a", "a"}}
	}))
	if !apierrors.IsInvalid(err) {
		t.Errorf("a repeated ServiceAccount: %v, want Invalid (list-type set)", err)
	}
	many := make([]string, 33)
	for i := range many {
		many[i] = "sa-" + strings.Repeat("a", i+1)
	}
	err = c.Create(ctx, cred("many", func(s *iamv1alpha1.APICredentialSpec) {
		s.WorkloadIdentity = &iamv1alpha1.WorkloadIdentity{ServiceAccounts: many}
	}))
	wantInvalid("33 ServiceAccounts", err, "33")

	wi := cred("wi", func(s *iamv1alpha1.APICredentialSpec) {
		s.IssueSecret = ptr.To(false)
		s.WorkloadIdentity = &iamv1alpha1.WorkloadIdentity{ServiceAccounts: []string{"worker"}}
	})
	if err := c.Create(ctx, wi); err != nil {
		t.Fatalf("issueSecret false with workloadIdentity: %v", err)
	}
	wi.Spec.IssueSecret = ptr.To(true)
	wantInvalid("issueSecret false -> true", c.Update(ctx, wi), "spec.issueSecret is immutable")
	wi.Spec.IssueSecret = ptr.To(false)
	wi.Spec.WorkloadIdentity = nil
	wantInvalid("removing workloadIdentity of a secretless credential", c.Update(ctx, wi), "needs spec.workloadIdentity")

	plain := cred("plain", func(*iamv1alpha1.APICredentialSpec) {})
	if err := c.Create(ctx, plain); err != nil {
		t.Fatal(err)
	}
	if plain.Spec.IssueSecret == nil || !*plain.Spec.IssueSecret {
		t.Errorf("spec.issueSecret default: %v, want true", plain.Spec.IssueSecret)
	}
	plain.Spec.IssueSecret = ptr.To(false)
	plain.Spec.WorkloadIdentity = &iamv1alpha1.WorkloadIdentity{ServiceAccounts: []string{"worker"}}
	wantInvalid("issueSecret true -> false", c.Update(ctx, plain), "spec.issueSecret is immutable")
}

func toStrings(v any) []string {
	var out []string
	if l, ok := v.([]any); ok {
		for _, e := range l {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
	}
	return out
}

func httpGet(t *testing.T, target string) *http.Request {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, target, nil)
	if err != nil {
		t.Fatal(err)
	}
	return req
}

// TestJWTBearerAsksTheAPIServerAboutBoundTokens: a projected token is bound to its Pod,
// and only the API server knows the Pod is gone. With TokenReviews set, the token server
// asks it on every exchange and refuses the token of a deleted Pod; without, the local
// check accepts it until its exp (what docs/credentials.md says of the default).
func TestJWTBearerAsksTheAPIServerAboutBoundTokens(t *testing.T) {
	ctx := context.Background()
	env, cfg := testenv.StartT(t)
	cs := kubernetes.NewForConfigOrDie(cfg)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "team-a"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().ServiceAccounts("team-a").Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "worker"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	// The token server as its own ServiceAccount, under the shipped RBAC, which lets it
	// create TokenReviews.
	tsName := "system:serviceaccount:keysmith-system:keysmith-token-server"
	tsUser, err := env.ControlPlane.AddUser(envtest.User{Name: tsName,
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:keysmith-system", "system:authenticated"}}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "keysmith-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	admin, err := ctrlclient.New(cfg, ctrlclient.Options{Scheme: testenv.Scheme()})
	if err != nil {
		t.Fatal(err)
	}
	if err := testenv.CreateFromFile(ctx, admin, filepath.Join(testenv.RepoRoot(), "config", "token-server", "rbac.yaml"), "keysmith-system"); err != nil {
		t.Fatal(err)
	}
	newIssuer := func(review bool) *tokenserver.ServiceAccountIssuer {
		t.Helper()
		issuer, err := tokenserver.NewServiceAccountIssuer(tsUser.Config(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := issuer.Refresh(ctx); err != nil {
			t.Fatal(err)
		}
		if review {
			issuer.TokenReviews = kubernetes.NewForConfigOrDie(tsUser.Config()).AuthenticationV1().TokenReviews()
		}
		return issuer
	}
	type server struct {
		f  *fixture
		id string
	}
	servers := map[bool]server{}
	for _, review := range []bool{false, true} {
		f := newFixture(t, func(o *tokenserver.Options) { o.WorkloadIdentity = newIssuer(review) })
		c := f.issue("wi", grants("profile-api:read-only"), func(o *iamv1alpha1.APICredential) {
			o.Spec.IssueSecret = ptr.To(false)
			o.Spec.WorkloadIdentity = &iamv1alpha1.WorkloadIdentity{ServiceAccounts: []string{"worker"}}
			o.Status.SecretHash = ""
		})
		servers[review] = server{f, c.id}
	}
	exchange := func(s server, assertion string) int {
		t.Helper()
		resp, _ := s.f.post("/oauth2/token", url.Values{"grant_type": {"urn:ietf:params:oauth:grant-type:jwt-bearer"},
			"client_id": {s.id}, "assertion": {assertion}}, "", "")
		return resp.StatusCode
	}

	pod, err := cs.CoreV1().Pods("team-a").Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "worker-0"},
		Spec: corev1.PodSpec{ServiceAccountName: "worker", AutomountServiceAccountToken: ptr.To(false),
			Containers: []corev1.Container{{Name: "app", Image: "registry.example.com/app:1"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// Each server's token carries its own issuer URL as audience.
	bound := map[bool]string{}
	for review, s := range servers {
		tr, err := cs.CoreV1().ServiceAccounts("team-a").CreateToken(ctx, "worker", &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
			Audiences: []string{s.f.ts.URL}, ExpirationSeconds: ptr.To[int64](600),
			BoundObjectRef: &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
		}}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		bound[review] = tr.Status.Token
		if code := exchange(s, tr.Status.Token); code != http.StatusOK {
			t.Fatalf("exchange of a live Pod's token (TokenReview %v): %d", review, code)
		}
	}

	// The Pod is deleted at once (it was never scheduled), and its tokens die with it at
	// the API server.
	if err := cs.CoreV1().Pods("team-a").Delete(ctx, pod.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := cs.CoreV1().Pods("team-a").Get(ctx, pod.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Fatalf("the Pod is still there after its deletion: %v", err)
	}
	// kube-apiserver caches a successful authentication for 10 s (its token success cache),
	// so the refusal may take that long.
	start := time.Now()
	for code := exchange(servers[true], bound[true]); code != http.StatusBadRequest; code = exchange(servers[true], bound[true]) {
		if time.Since(start) > 30*time.Second {
			t.Fatalf("exchange of a deleted Pod's token, asking the API server: %d after %s, want 400", code, time.Since(start).Round(time.Second))
		}
		time.Sleep(time.Second)
	}
	t.Logf("a deleted Pod's token refused %s after the deletion", time.Since(start).Round(100*time.Millisecond))
	if code := exchange(servers[false], bound[false]); code != http.StatusOK {
		t.Errorf("exchange of a deleted Pod's token, local check only: %d, want 200 (accepted until exp)", code)
	}
}
