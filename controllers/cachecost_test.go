package controllers

import (
	"fmt"
	"runtime"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/json"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/binding"
	"github.com/keysmith-dev/keysmith/internal/credential"
)

// TestCacheCostPerCredential logs what the manager's cache holds per issued credential
// (issue 11 item 2): the APICredential and its Secret decoded as the informers decode
// them (JSON for the custom resource, protobuf for the Secret) and transformed as the
// cache transforms them, and the informer store's keys and indexes (namespace, and the
// client ID and API name field indexes, which controller-runtime doubles into a
// namespaced and a cluster-wide key, and the manager's APICredential informer keeps
// cluster-wide only). Figures are logged; what is asserted is that the trimmed objects
// still decide the same (TestTrimCredentialSecret, TestTrimCredential,
// TestCachedFactsDecideNothingOnlyWhenLiveWould) and the lean indexes still answer.
func TestCacheCostPerCredential(t *testing.T) {
	const n = 2000
	cred, secret := issuedPair(t)
	credJSON, err := json.Marshal(cred)
	if err != nil {
		t.Fatal(err)
	}
	applied := cred.DeepCopy()
	applied.Annotations = map[string]string{corev1.LastAppliedConfigAnnotation: string(credJSON)}
	appliedJSON, err := json.Marshal(applied)
	if err != nil {
		t.Fatal(err)
	}
	secretProto, err := secret.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	decodeCred := func(raw []byte, transform func(any) (any, error)) func(i int) any {
		return func(i int) any {
			c := &iamv1alpha1.APICredential{}
			if err := json.Unmarshal(raw, c); err != nil {
				t.Fatal(err)
			}
			c.Name, c.UID = fmt.Sprintf("cred-%05d", i), types.UID(fmt.Sprintf("0f8e6a52-3c1d-4a7b-9e2f-%012d", i))
			out, _ := transform(c)
			return out
		}
	}
	decodeSecret := func(transform func(any) (any, error)) func(i int) any {
		return func(i int) any {
			s := &corev1.Secret{}
			if err := s.Unmarshal(secretProto); err != nil {
				t.Fatal(err)
			}
			s.Name = fmt.Sprintf("cred-%05d", i)
			out, _ := transform(s)
			return out
		}
	}
	stripManagedFields := func(in any) (any, error) {
		in.(metav1.Object).SetManagedFields(nil)
		return in, nil
	}
	for _, row := range []struct {
		what string
		make func(i int) any
	}{
		{"APICredential, managedFields stripped (before)", decodeCred(credJSON, stripManagedFields)},
		{"APICredential, trimCredential (now)", decodeCred(credJSON, trimCredential)},
		{"APICredential applied with kubectl, managedFields stripped (before)", decodeCred(appliedJSON, stripManagedFields)},
		{"APICredential applied with kubectl, trimCredential (now)", decodeCred(appliedJSON, trimCredential)},
		{"credential Secret, managedFields stripped", decodeSecret(stripManagedFields)},
		{"credential Secret, trimCredentialSecret (now)", decodeSecret(trimCredentialSecret)},
	} {
		t.Logf("%-78s %6.0f bytes", row.what, perObject(n, row.make))
	}

	// The informer stores and their indexes, as controller-runtime sets them up.
	doubled := func(extract func(*iamv1alpha1.APICredential) []string) cache.IndexFunc {
		return func(obj any) ([]string, error) {
			c := obj.(*iamv1alpha1.APICredential)
			var out []string
			for _, v := range extract(c) {
				out = append(out, c.Namespace+"/"+v, "__all_namespaces/"+v)
			}
			return out, nil
		}
	}
	creds := make([]*iamv1alpha1.APICredential, n)
	secrets := make([]*corev1.Secret, n)
	for i := range creds {
		creds[i] = decodeCred(credJSON, trimCredential)(i).(*iamv1alpha1.APICredential)
		id, err := credential.NewClientID()
		if err != nil {
			t.Fatal(err)
		}
		creds[i].Status.ClientID = id
		secrets[i] = decodeSecret(trimCredentialSecret)(i).(*corev1.Secret)
	}
	// controller-runtime's doubled field indexes (before), and the same reduced to their
	// cluster-wide keys as the manager's APICredential informer keeps them (now).
	for _, row := range []struct {
		what string
		lean bool
	}{{"informer stores, keys and indexes (both types), indexes doubled (before)", false},
		{"informer stores, keys and indexes (both types), cluster-wide keys only (now)", true}} {
		indexers := cache.Indexers{
			cache.NamespaceIndex:                 cache.MetaNamespaceIndexFunc,
			"field:" + iamv1alpha1.ClientIDField: doubled(func(c *iamv1alpha1.APICredential) []string { return []string{c.Status.ClientID} }),
			"field:" + apiNameIndex: doubled(func(c *iamv1alpha1.APICredential) []string {
				return []string{c.Spec.APIs[0].Name}
			}),
		}
		if row.lean {
			indexers = (&clusterWideIndexSet{full: cache.Indexers{}}).lean(indexers)
		}
		before := heapInUse()
		credStore := cache.NewIndexer(cache.MetaNamespaceKeyFunc, indexers)
		secretStore := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
		for i := range creds {
			if err := credStore.Add(creds[i]); err != nil {
				t.Fatal(err)
			}
			if err := secretStore.Add(secrets[i]); err != nil {
				t.Fatal(err)
			}
		}
		t.Logf("%-78s %6.0f bytes", row.what, float64(heapInUse()-before)/n)
		runtime.KeepAlive(credStore)
		runtime.KeepAlive(secretStore)
		if got, err := credStore.ByIndex("field:"+iamv1alpha1.ClientIDField, "__all_namespaces/"+creds[7].Status.ClientID); err != nil || len(got) != 1 {
			t.Errorf("client ID index: %v, %v", got, err)
		}
	}
}

// perObject is the live heap that n objects made by newObject hold, per object.
func perObject(n int, newObject func(i int) any) float64 {
	objs := make([]any, n)
	before := heapInUse()
	for i := range objs {
		objs[i] = newObject(i)
	}
	held := heapInUse() - before
	runtime.KeepAlive(objs)
	return float64(held) / float64(n)
}

// issuedPair is an issued APICredential and its Secret as the API server returns them
// (with managedFields), as the reconciler writes them.
func issuedPair(t *testing.T) (*iamv1alpha1.APICredential, *corev1.Secret) {
	t.Helper()
	cred := issuedCredential(t)
	cred.Namespace, cred.Name = "scale-w4", "cred-00000"
	cred.Annotations = nil
	cred.Labels = nil
	cred.ManagedFields = []metav1.ManagedFieldsEntry{
		{Manager: "scale", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "iam.keysmith.dev/v1alpha1", FieldsType: "FieldsV1",
			FieldsV1: metav1.NewFieldsV1(`{"f:spec":{".":{},"f:apis":{}}}`)},
		{Manager: "manager", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "iam.keysmith.dev/v1alpha1", FieldsType: "FieldsV1", Subresource: "status",
			FieldsV1: metav1.NewFieldsV1(`{"f:status":{".":{},"f:account":{},"f:clientID":{},"f:conditions":{".":{},"k:{\"type\":\"Active\"}":{},"k:{\"type\":\"Ready\"}":{}},"f:issuedAt":{},"f:observedGeneration":{},"f:secretHash":{},"f:secretRef":{}}}`)},
	}
	cred.Status.Account = cred.Namespace
	cred.Status.SecretRef.Name = cred.Name
	cred.Status.Conditions[0].Message = fmt.Sprintf("client secret issued into Secret %q", cred.Name)
	secretValue, err := credential.NewSecret()
	if err != nil {
		t.Fatal(err)
	}
	ring, err := binding.NewRing(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	issuedAt := time.Date(2026, 12, 2, 5, 0, 0, 0, time.UTC)
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: cred.Namespace, Name: cred.Name, UID: "5b1e7f0c-8d2a-4c3e-9f61-2a7b8c9d0e1f", ResourceVersion: "123456",
			CreationTimestamp: metav1.Now(),
			Labels:            map[string]string{iamv1alpha1.CredentialLabel: cred.Name, "app.kubernetes.io/managed-by": "keysmith"},
			Annotations: map[string]string{
				iamv1alpha1.KeyVersionAnnotation: "0", iamv1alpha1.IssuedAtAnnotation: issuedAt.Format(time.RFC3339),
				iamv1alpha1.BindingAnnotation: ring.Sign(bindingSubject(cred, cred.Status.ClientID, credential.Hash(secretValue), 0, issuedAt)),
			},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: iamv1alpha1.GroupVersion.String(), Kind: "APICredential", Name: cred.Name,
				UID: cred.UID, Controller: ptr.To(true), BlockOwnerDeletion: ptr.To(true)}},
			ManagedFields: []metav1.ManagedFieldsEntry{{Manager: "manager", Operation: metav1.ManagedFieldsOperationUpdate, APIVersion: "v1", FieldsType: "FieldsV1",
				FieldsV1: metav1.NewFieldsV1(`{"f:data":{".":{},"f:clientID":{},"f:clientSecret":{},"f:tokenURL":{}},"f:metadata":{"f:annotations":{},"f:labels":{},"f:ownerReferences":{}},"f:type":{}}`)}},
		},
		Type: corev1.SecretTypeOpaque,
		Data: map[string][]byte{
			iamv1alpha1.DefaultClientIDKey: []byte(cred.Status.ClientID), iamv1alpha1.DefaultClientSecretKey: []byte(secretValue),
			iamv1alpha1.DefaultTokenURLKey: []byte("https://keysmith.example.com/oauth2/token"),
		},
	}
	return cred, secret
}
