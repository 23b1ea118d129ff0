package controllers

import (
	"context"
	"fmt"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/yaml"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// fromYAML builds an object of the keysmith API from a YAML manifest, as kubectl would send it.
func fromYAML(manifest string) *unstructured.Unstructured {
	obj := map[string]any{}
	ExpectWithOffset(2, yaml.Unmarshal([]byte(manifest), &obj)).To(Succeed())
	u := &unstructured.Unstructured{Object: obj}
	u.SetAPIVersion(iamv1alpha1.GroupVersion.String())
	return u
}

const validCredentialSpec = `
  apis:
  - {name: platform-api, permission: admin}`

var _ = Describe("The CRD schema", func() {
	var ns string
	BeforeEach(func(ctx context.Context) { ns = newNamespace(ctx, nil) })

	credentialManifest := func(spec string) string {
		return fmt.Sprintf("kind: APICredential\nmetadata: {name: bad, namespace: %s}\nspec:%s\n", ns, spec)
	}

	DescribeTable("refuses a malformed APICredential with a message that names the field",
		func(ctx context.Context, spec string, wantMessages ...string) {
			err := k8sClient.Create(ctx, fromYAML(credentialManifest(spec)))
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
			for _, m := range wantMessages {
				Expect(err.Error()).To(ContainSubstring(m))
			}
		},
		Entry("no APIs", " {}", "spec.apis: Required value"),
		Entry("an empty API list", "\n  apis: []", "spec.apis", "at least 1 items"),
		Entry("the same API twice", validCredentialSpec+"\n  - {name: platform-api, permission: user}", `spec.apis[1]: Duplicate value`),
		Entry("an API name that is not a DNS subdomain", "\n  apis: [{name: Platform_API, permission: admin}]", "spec.apis[0].name"),
		Entry("a permission in the wrong format", "\n  apis: [{name: platform-api, permission: Admin}]", "spec.apis[0].permission"),
		Entry("a grant without permission", "\n  apis: [{name: platform-api}]", "spec.apis[0].permission: Required value"),
		Entry("too many APIs", "\n  apis:"+manyGrants(33), "spec.apis", "must have at most 32 items"),
		Entry("a workspace that is not a DNS label", validCredentialSpec+"\n  scope: {workspaces: [EU_1]}", "spec.scope.workspaces[0]"),
		Entry("the same workspace twice", validCredentialSpec+"\n  scope: {workspaces: [eu-1, eu-1]}", "spec.scope.workspaces[1]: Duplicate value"),
		Entry("an account in the wrong format", validCredentialSpec+"\n  scope: {account: ACME Corp}", "spec.scope.account"),
		Entry("active that is not a boolean", validCredentialSpec+"\n  active: \"no\"", "spec.active"),
		Entry("a grace period that is not a duration", validCredentialSpec+"\n  rotation: {gracePeriod: soon}", "spec.rotation.gracePeriod"),
		Entry("a grace period in days", validCredentialSpec+"\n  rotation: {gracePeriod: 2d}", "spec.rotation.gracePeriod"),
		Entry("a grace period over 30 days", validCredentialSpec+"\n  rotation: {gracePeriod: 1000h}", "spec.rotation.gracePeriod must be between 0s and 720h"),
		Entry("a rotation period under 5 minutes", validCredentialSpec+"\n  rotation: {period: 1m}", "spec.rotation.period must be at least 5m"),
		Entry("a negative key version", validCredentialSpec+"\n  rotation: {keyVersion: -1}", "spec.rotation.keyVersion"),
		Entry("an expiry that is not RFC 3339", validCredentialSpec+"\n  expiresAt: tomorrow", "spec.expiresAt"),
		Entry("an expiry without a time zone", validCredentialSpec+"\n  expiresAt: \"2027-01-01 10:00\"", "spec.expiresAt"),
		Entry("a Secret name that is not a DNS subdomain", validCredentialSpec+"\n  secretTemplate: {name: My_Secret}", "spec.secretTemplate.name"),
		Entry("two Secret keys with the same name", validCredentialSpec+"\n  secretTemplate: {keys: {clientID: KEY, clientSecret: KEY}}", "spec.secretTemplate.keys must name three different keys"),
		Entry("a Secret key with a slash", validCredentialSpec+"\n  secretTemplate: {keys: {clientSecret: a/b}}", "spec.secretTemplate.keys.clientSecret"),
		Entry("a display name over 128 characters", validCredentialSpec+"\n  displayName: "+longString(129), "spec.displayName"),
	)

	It("refuses to lower the key version or rename the Secret of an existing credential", func(ctx context.Context) {
		obj := fromYAML(credentialManifest(validCredentialSpec + "\n  rotation: {keyVersion: 2}\n  secretTemplate: {name: keys}"))
		Expect(k8sClient.Create(ctx, obj)).To(Succeed())

		lowered := obj.DeepCopy()
		Expect(unstructured.SetNestedField(lowered.Object, int64(1), "spec", "rotation", "keyVersion")).To(Succeed())
		err := k8sClient.Update(ctx, lowered)
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
		Expect(err.Error()).To(ContainSubstring("spec.rotation.keyVersion cannot decrease"))

		renamed := obj.DeepCopy()
		Expect(unstructured.SetNestedField(renamed.Object, "other-keys", "spec", "secretTemplate", "name")).To(Succeed())
		err = k8sClient.Update(ctx, renamed)
		Expect(apierrors.IsInvalid(err)).To(BeTrue(), "got %v", err)
		Expect(err.Error()).To(ContainSubstring("spec.secretTemplate.name is immutable"))
	})

	It("defaults active to true and the grace period to 1h", func(ctx context.Context) {
		obj := fromYAML(credentialManifest(validCredentialSpec + "\n  rotation: {keyVersion: 1}"))
		Expect(k8sClient.Create(ctx, obj)).To(Succeed())
		active, _, _ := unstructured.NestedBool(obj.Object, "spec", "active")
		grace, _, _ := unstructured.NestedString(obj.Object, "spec", "rotation", "gracePeriod")
		Expect(active).To(BeTrue())
		Expect(grace).To(Equal("1h"))
	})

	DescribeTable("refuses a malformed APIDefinition with a message that names the field",
		func(ctx context.Context, spec string, wantMessages ...string) {
			err := k8sClient.Create(ctx, fromYAML("kind: APIDefinition\nmetadata: {name: bad-api}\nspec:"+spec))
			Expect(apierrors.IsInvalid(err)).To(BeTrue(), "want Invalid, got %v", err)
			for _, m := range wantMessages {
				Expect(err.Error()).To(ContainSubstring(m))
			}
		},
		Entry("an unknown scope level", "\n  displayName: Bad\n  scopeLevel: Team\n  permissions: [{name: read-only, methods: [GET]}]",
			`spec.scopeLevel: Unsupported value: "Team"`),
		Entry("no permissions", "\n  displayName: Bad\n  scopeLevel: Org", "spec.permissions: Required value"),
		Entry("a lower-case method", "\n  displayName: Bad\n  scopeLevel: Org\n  permissions: [{name: read-only, methods: [get]}]", "spec.permissions[0].methods[0]"),
		Entry("the same permission twice", "\n  displayName: Bad\n  scopeLevel: Org\n  permissions: [{name: admin, methods: [\"*\"]}, {name: admin, methods: [GET]}]",
			"spec.permissions[1]: Duplicate value"),
		Entry("a token URL that is not a URL", "\n  displayName: Bad\n  scopeLevel: Org\n  tokenURL: not a url\n  permissions: [{name: admin, methods: [\"*\"]}]",
			"spec.tokenURL must be an absolute http or https URL"),
		Entry("no display name", "\n  scopeLevel: Org\n  permissions: [{name: admin, methods: [\"*\"]}]", "spec.displayName: Required value"),
	)
})

func manyGrants(n int) string {
	s := ""
	for i := range n {
		s += fmt.Sprintf("\n  - {name: api-%d, permission: admin}", i)
	}
	return s
}

func longString(n int) string {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'x'
	}
	return string(b)
}
