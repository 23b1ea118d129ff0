package install

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	apimeta "k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/testenv"
)

// adminOwner is the field manager of what the cluster's admin applies after the
// installation (the catalog, a team's credential).
const adminOwner = "keysmith-install-test-admin"

// tokenServerCertSecret is the Secret of the token server's serving certificate (its
// ca.crt is what a client of the shared token server trusts).
const tokenServerCertSecret = "keysmith-token-server-tls"

// tokenServerCAConfigMap is where the manager publishes the token server's ca.crt alone.
const tokenServerCAConfigMap = "keysmith-token-server-ca"

// sampleObjects returns the objects of config/samples/<file>.
func sampleObjects(file string) ([]*unstructured.Unstructured, error) {
	return testenv.ReadObjects(filepath.Join(testenv.RepoRoot(), "config", "samples", file), "")
}

// applyAsAdmin applies objs as the admin would after installing.
func applyAsAdmin(ctx context.Context, c client.Client, objs ...*unstructured.Unstructured) error {
	for _, obj := range objs {
		if err := c.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj.DeepCopy()), client.FieldOwner(adminOwner), client.ForceOwnership); err != nil {
			return fmt.Errorf("applying %s: %w", describe(obj), err)
		}
	}
	return nil
}

// issuedCredential is what a team reads from its credential's Secret.
type issuedCredential struct {
	name, secretName                 string
	clientID, clientSecret, tokenURL string
}

// issueSampleCredential applies the sample catalog and the sample credential
// team-checkout/profile-reader, after showing that admission of APICredentials goes
// through the manager's webhook (a credential granting an API outside the catalog is
// denied by it, which only the webhook checks), waits until the credential is Ready and
// returns what its Secret holds.
func issueSampleCredential(ctx context.Context, c client.Client) (*issuedCredential, error) {
	catalog, err := sampleObjects("iam_v1alpha1_apidefinitions.yaml")
	if err != nil {
		return nil, err
	}
	creds, err := sampleObjects("iam_v1alpha1_apicredentials.yaml")
	if err != nil {
		return nil, err
	}
	var ns, cred *unstructured.Unstructured
	for _, obj := range creds {
		switch {
		case obj.GetKind() == "Namespace":
			ns = obj
		case obj.GetKind() == "APICredential" && obj.GetName() == "profile-reader":
			cred = obj
		}
	}
	if ns == nil || cred == nil {
		return nil, fmt.Errorf("config/samples no longer has the Namespace and APICredential profile-reader")
	}
	if err := applyAsAdmin(ctx, c, append(catalog, ns)...); err != nil {
		return nil, err
	}

	outside := &iamv1alpha1.APICredential{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns.GetName(), Name: "outside-the-catalog"},
		Spec:       iamv1alpha1.APICredentialSpec{APIs: []iamv1alpha1.APIGrant{{Name: "no-such-api", Permission: "read-only"}}},
	}
	err = c.Create(ctx, outside)
	const denied = `admission webhook "apicredentials.iam.keysmith.dev" denied the request`
	if err == nil || !strings.Contains(err.Error(), denied) {
		return nil, fmt.Errorf("creating a credential for an API outside the catalog: want the webhook's denial (%s), got %v", denied, err)
	}

	if err := applyAsAdmin(ctx, c, cred); err != nil {
		return nil, err
	}
	live := &iamv1alpha1.APICredential{}
	key := client.ObjectKeyFromObject(cred)
	var last string
	err = wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		if err := c.Get(ctx, key, live); err != nil {
			return false, err
		}
		ready := apimeta.FindStatusCondition(live.Status.Conditions, "Ready")
		if ready != nil {
			last = fmt.Sprintf("Ready=%s %s: %s", ready.Status, ready.Reason, ready.Message)
		}
		return ready != nil && ready.Status == metav1.ConditionTrue && live.Status.SecretRef != nil, nil
	})
	if err != nil {
		return nil, fmt.Errorf("APICredential %s not Ready: %w (%s)", key, err, last)
	}
	secret := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: key.Namespace, Name: live.Status.SecretRef.Name}, secret); err != nil {
		return nil, err
	}
	return &issuedCredential{
		name:         key.String(),
		secretName:   secret.Name,
		clientID:     string(secret.Data["CLIENT_ID"]),
		clientSecret: string(secret.Data["CLIENT_SECRET"]),
		tokenURL:     string(secret.Data["TOKEN_URL"]),
	}, nil
}

// deleteSampleCredential deletes team-checkout/profile-reader (through the webhook, which
// must still answer), waits until it is gone and deletes its Secret, as the garbage
// collector envtest lacks would, so that the next installation issues it afresh.
func deleteSampleCredential(ctx context.Context, c client.Client, cred *issuedCredential) error {
	obj := &iamv1alpha1.APICredential{ObjectMeta: metav1.ObjectMeta{Namespace: "team-checkout", Name: "profile-reader"}}
	if err := c.Delete(ctx, obj); err != nil {
		return err
	}
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(ctx context.Context) (bool, error) {
		err := c.Get(ctx, client.ObjectKeyFromObject(obj), obj)
		return apierrors.IsNotFound(err), client.IgnoreNotFound(err)
	})
	if err != nil {
		return fmt.Errorf("APICredential %s not deleted: %w", cred.name, err)
	}
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: obj.Namespace, Name: cred.secretName}}
	return client.IgnoreNotFound(c.Delete(ctx, secret))
}

// tokenServerClient is an HTTP client that reaches the installation's Services as a pod
// would (through the test's stand-in for kube-proxy and DNS) and trusts only the CA of
// the token server's serving certificate, as its clients are told to: the ca.crt the
// manager publishes in a ConfigMap (its Secret also holds ca.key), which must be the
// Secret's.
func tokenServerClient(ctx context.Context, c client.Client, in *installation) (*http.Client, error) {
	secret := &corev1.Secret{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: in.namespace, Name: tokenServerCertSecret}, secret); err != nil {
		return nil, err
	}
	published := &corev1.ConfigMap{}
	if err := c.Get(ctx, client.ObjectKey{Namespace: in.namespace, Name: tokenServerCAConfigMap}, published); err != nil {
		return nil, err
	}
	if published.Data["ca.crt"] != string(secret.Data["ca.crt"]) || len(published.Data) != 1 {
		return nil, fmt.Errorf("ConfigMap %s/%s holds %v, not just the ca.crt of Secret %s", in.namespace, tokenServerCAConfigMap, slices.Sorted(maps.Keys(published.Data)), tokenServerCertSecret)
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM([]byte(published.Data["ca.crt"])) {
		return nil, fmt.Errorf("ConfigMap %s/%s has no ca.crt certificate", in.namespace, tokenServerCAConfigMap)
	}
	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			DialContext:     in.dialContext,
			TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12},
		},
	}, nil
}

// exchange trades the credential for an access token at its TOKEN_URL with
// x/oauth2/clientcredentials over hc, retrying while the token server has not yet seen
// the new credential, then verifies the token's signature with go-jose against the
// token server's JWKS and checks its issuer and audience.
func exchange(ctx context.Context, hc *http.Client, cred *issuedCredential, issuer, audience string) (*jwt.Claims, error) {
	cc := &clientcredentials.Config{ClientID: cred.clientID, ClientSecret: cred.clientSecret, TokenURL: cred.tokenURL}
	octx := context.WithValue(ctx, oauth2.HTTPClient, hc)
	var tok *oauth2.Token
	var last error
	err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, 30*time.Second, true, func(context.Context) (bool, error) {
		tok, last = cc.Token(octx)
		return last == nil, nil
	})
	if err != nil {
		return nil, fmt.Errorf("exchanging %s at %s: %w (last: %v)", cred.name, cred.tokenURL, err, last)
	}

	req, err := http.NewRequestWithContext(ctx, http.MethodGet, issuer+"/.well-known/jwks.json", nil)
	if err != nil {
		return nil, err
	}
	resp, err := hc.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil || resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("GET %s: %s %v", req.URL, resp.Status, err)
	}
	var jwks jose.JSONWebKeySet
	if err := json.Unmarshal(body, &jwks); err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	parsed, err := jwt.ParseSigned(tok.AccessToken, []jose.SignatureAlgorithm{jose.ES256})
	if err != nil {
		return nil, fmt.Errorf("the access token is not a signed JWT: %w", err)
	}
	var claims jwt.Claims
	if err := parsed.Claims(&jwks, &claims); err != nil {
		return nil, fmt.Errorf("the access token's signature does not verify with the JWKS: %w", err)
	}
	if err := claims.ValidateWithLeeway(jwt.Expected{Issuer: issuer, AnyAudience: jwt.Audience{audience}, Time: time.Now()}, 0); err != nil {
		return nil, fmt.Errorf("the access token's claims (iss %q, aud %v): %w", claims.Issuer, claims.Audience, err)
	}
	if !slices.Contains(claims.Audience, audience) {
		return nil, fmt.Errorf("the access token's audience %v lacks %s", claims.Audience, audience)
	}
	return &claims, nil
}
