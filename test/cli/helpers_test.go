package cli

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"
	corev1 "k8s.io/api/core/v1"
	meta "k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// applyAsArgoCD applies credential ns/name with spec as Argo CD's application controller
// does (server-side apply, field manager argocd-controller).
func applyAsArgoCD(ctx context.Context, ns, name string, spec map[string]any) {
	GinkgoHelper()
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": iamv1alpha1.GroupVersion.String(), "kind": "APICredential",
		"metadata": map[string]any{"namespace": ns, "name": name},
		"spec":     spec,
	}}
	Expect(k8sClient.Apply(ctx, client.ApplyConfigurationFromUnstructured(obj), client.FieldOwner("argocd-controller"), client.ForceOwnership)).To(Succeed())
}

// created is what `create -o json` prints (DESIGN §6).
type created struct {
	Name         string `json:"name"`
	Namespace    string `json:"namespace"`
	ClientID     string `json:"clientID"`
	ClientSecret string `json:"clientSecret"`
	TokenURL     string `json:"tokenURL"`
}

// createJSON runs `create NAME … -o json` as the admin in ns and decodes what it printed.
func createJSON(ctx context.Context, ns, name string, args ...string) created {
	r := admin(ctx, append([]string{"-n", ns, "create", name, "-o", "json"}, args...)...)
	ExpectWithOffset(1, r.code).To(Equal(0), "%s", r)
	var c created
	ExpectWithOffset(1, json.Unmarshal([]byte(r.stdout), &c)).To(Succeed(), "create -o json prints one JSON object: %s", r)
	return c
}

// exchange trades a client ID and secret for an access token with the client credentials
// grant, as a workload would, and returns the token endpoint's HTTP status (200 on
// success) and the token.
func exchange(ctx context.Context, tokenURL, clientID, clientSecret string) (int, string) {
	cc := &clientcredentials.Config{
		ClientID: clientID, ClientSecret: clientSecret, TokenURL: tokenURL,
		// One request per exchange: auto-detection would retry a refusal with the other
		// style and spend the address's budget of failed authentications twice.
		AuthStyle: oauth2.AuthStyleInHeader,
	}
	tok, err := cc.Token(ctx)
	if err == nil {
		return http.StatusOK, tok.AccessToken
	}
	if re := (*oauth2.RetrieveError)(nil); errors.As(err, &re) && re.Response != nil {
		return re.Response.StatusCode, ""
	}
	GinkgoWriter.Printf("exchange: %v\n", err)
	return 0, ""
}

// exchangeStatus is exchange's status alone, for polling.
func exchangeStatus(ctx context.Context, tokenURL, clientID, clientSecret string) func() int {
	return func() int {
		code, _ := exchange(ctx, tokenURL, clientID, clientSecret)
		return code
	}
}

// authz asks the token server's forward-auth endpoint whether the bearer of token may call
// api with method, and returns the status and body.
func authz(ctx context.Context, token, api, method string) (int, string) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, tokenServerURL+"/authz/"+api, nil)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set("X-Forwarded-Method", method)
	req.Header.Set("X-Forwarded-Uri", "/")
	resp, err := http.DefaultClient.Do(req)
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// credentialSecret reads a credential's Secret with the admin's client.
func credentialSecret(ctx context.Context, ns, name string) *corev1.Secret {
	s := &corev1.Secret{}
	ExpectWithOffset(1, k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, s)).To(Succeed())
	return s
}

// credential reads a credential with the admin's client.
func credential(ctx context.Context, ns, name string) *iamv1alpha1.APICredential {
	c := &iamv1alpha1.APICredential{}
	ExpectWithOffset(1, k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, c)).To(Succeed())
	return c
}

// exists reports whether a credential is still there (a terminating one counts as gone).
func exists(ctx context.Context, ns, name string) func() bool {
	return func() bool {
		c := &iamv1alpha1.APICredential{}
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, c)
		return err == nil && c.DeletionTimestamp == nil
	}
}

// activeCondition returns a credential's Active condition status ("" when absent).
func activeCondition(ctx context.Context, ns, name string) func() string {
	return func() string {
		c := &iamv1alpha1.APICredential{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: ns, Name: name}, c); err != nil {
			return ""
		}
		if cond := meta.FindStatusCondition(c.Status.Conditions, iamv1alpha1.ConditionActive); cond != nil {
			return string(cond.Status)
		}
		return ""
	}
}

// lines splits output into its non-empty lines.
func lines(s string) []string {
	var out []string
	for l := range strings.SplitSeq(s, "\n") {
		if strings.TrimSpace(l) != "" {
			out = append(out, l)
		}
	}
	return out
}

// rowOf returns the line of a table that starts with name, or "".
func rowOf(table, name string) string {
	for _, l := range lines(table) {
		if f := strings.Fields(l); len(f) > 0 && f[0] == name {
			return l
		}
	}
	return ""
}
