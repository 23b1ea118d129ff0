package tokenserver

import (
	"context"
	"flag"
	"fmt"
	"os"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apiruntime "k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	toolscache "k8s.io/client-go/tools/cache"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
	"github.com/keysmith-dev/keysmith/internal/credential"
)

var credMemProfile = flag.String("credmem.profile", "", "write a heap profile to this file while TestCredentialInformerMemory holds its credentials")

// credentialJSON is an APICredential as the API server sends it once the manager has
// issued it: managed fields, finalizer, labels, conditions and all.
func credentialJSON(i int, clientID, hash string) []byte {
	return fmt.Appendf(nil, `{"apiVersion":"iam.keysmith.dev/v1alpha1","kind":"APICredential",
"metadata":{"name":"cred-%[1]d","namespace":"team-%[2]d","uid":"6f1c2b9e-0d4a-4f5e-9a31-%012[1]d","resourceVersion":"%[3]d","generation":1,
 "creationTimestamp":"2026-12-02T05:00:00Z","finalizers":["iam.keysmith.dev/secret-cleanup"],"labels":{"app.kubernetes.io/part-of":"billing"},
 "annotations":{"kubectl.kubernetes.io/last-applied-configuration":"{\"apiVersion\":\"iam.keysmith.dev/v1alpha1\",\"kind\":\"APICredential\",\"metadata\":{\"name\":\"cred-%[1]d\"}}"},
 "managedFields":[{"manager":"kubectl","operation":"Apply","apiVersion":"iam.keysmith.dev/v1alpha1","time":"2026-12-02T05:00:00Z","fieldsType":"FieldsV1","fieldsV1":{"f:spec":{"f:apis":{},"f:scope":{"f:account":{},"f:workspaces":{}}}}},
  {"manager":"keysmith-manager","operation":"Update","apiVersion":"iam.keysmith.dev/v1alpha1","time":"2026-12-02T05:00:01Z","fieldsType":"FieldsV1","fieldsV1":{"f:status":{"f:clientID":{},"f:secretHash":{},"f:conditions":{}}},"subresource":"status"}]},
"spec":{"displayName":"Billing exporter %[1]d","apis":[{"name":"platform-api","permission":"user"},{"name":"profile-api","permission":"read-only"}],
 "scope":{"account":"acme","workspaces":["eu-prod","us-prod"]},"rotation":{"keyVersion":1}},
"status":{"clientID":"%[4]s","secretHash":"%[5]s","secretRef":{"name":"cred-%[1]d"},"issuedAt":"2026-12-02T05:00:01Z","keyVersion":1,"account":"acme","observedGeneration":1,
 "conditions":[{"type":"Ready","status":"True","reason":"Issued","message":"the credential is issued","lastTransitionTime":"2026-12-02T05:00:01Z","observedGeneration":1},
  {"type":"Active","status":"True","reason":"Issued","message":"the credential is active","lastTransitionTime":"2026-12-02T05:00:01Z","observedGeneration":1}]}}`,
		i, i%100, 1000+i, clientID, hash)
}

var decoder = func() apiruntime.Decoder {
	s := apiruntime.NewScheme()
	if err := iamv1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	return serializer.NewCodecFactory(s).UniversalDeserializer()
}()

func decodeCredential(t testing.TB, b []byte) *iamv1alpha1.APICredential {
	t.Helper()
	obj, err := apiruntime.Decode(decoder, b)
	if err != nil {
		t.Fatal(err)
	}
	return obj.(*iamv1alpha1.APICredential)
}

// credentialTransform is the transform CacheOptions gives the APICredential informer.
func credentialTransform(t testing.TB) toolscache.TransformFunc {
	t.Helper()
	for obj, by := range CacheOptions(nil, "keysmith-system", "keys", false).ByObject {
		if _, ok := obj.(*iamv1alpha1.APICredential); ok {
			return by.Transform
		}
	}
	t.Fatal("CacheOptions has no APICredential transform")
	return nil
}

// credentialInformer is the APICredential informer of a token server (client-go's, with
// controller-runtime's indexers and the transform of CacheOptions) over a fake list and
// watch, feeding store through Watch's handlers; each handled event is sent on events.
type credentialInformer struct {
	informer toolscache.SharedIndexInformer
	handled  toolscache.ResourceEventHandlerRegistration
	watcher  *watch.FakeWatcher
	events   chan struct{}
}

func newCredentialInformer(t testing.TB, store *Store, list func() []*iamv1alpha1.APICredential) *credentialInformer {
	t.Helper()
	ci := &credentialInformer{watcher: watch.NewFakeWithChanSize(16, false), events: make(chan struct{}, 16)}
	lw := &toolscache.ListWatch{
		ListWithContextFunc: func(context.Context, metav1.ListOptions) (apiruntime.Object, error) {
			l := &iamv1alpha1.APICredentialList{ListMeta: metav1.ListMeta{ResourceVersion: "1"}}
			for _, o := range list() {
				l.Items = append(l.Items, *o)
			}
			return l, nil
		},
		WatchFuncWithContext: func(_ context.Context, opts metav1.ListOptions) (watch.Interface, error) {
			if opts.SendInitialEvents != nil && *opts.SendInitialEvents {
				// A streaming list (WatchListClient), as the token server gets it from
				// kube-apiserver: the items as Added events, then the bookmark that ends them.
				go func() {
					for _, o := range list() {
						ci.watcher.Add(o)
					}
					ci.watcher.Action(watch.Bookmark, &iamv1alpha1.APICredential{ObjectMeta: metav1.ObjectMeta{
						ResourceVersion: "1", Annotations: map[string]string{metav1.InitialEventsAnnotationKey: "true"},
					}})
				}()
			}
			return ci.watcher, nil
		},
	}
	ci.informer = toolscache.NewSharedIndexInformer(lw, &iamv1alpha1.APICredential{}, 0, toolscache.Indexers{
		toolscache.NamespaceIndex: toolscache.MetaNamespaceIndexFunc,
	})
	if err := ci.informer.SetTransform(credentialTransform(t)); err != nil {
		t.Fatal(err)
	}
	h := credentialHandlers(store)
	signal := func() { ci.events <- struct{}{} }
	var err error
	if ci.handled, err = ci.informer.AddEventHandler(toolscache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { h.OnAdd(o, false); signal() },
		UpdateFunc: func(o, n any) { h.OnUpdate(o, n); signal() },
		DeleteFunc: func(o any) { h.OnDelete(o); signal() },
	}); err != nil {
		t.Fatal(err)
	}
	return ci
}

func (ci *credentialInformer) start(t testing.TB) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go ci.informer.RunWithContext(ctx)
	if !toolscache.WaitForCacheSync(ctx.Done(), ci.informer.HasSynced, ci.handled.HasSynced) {
		t.Fatal("informer did not sync")
	}
}

// TestCredentialInformerMemory loads 10 000 issued credentials through the token
// server's informer path (decoded from the API server's JSON, transformed, indexed, fed
// to the store by Watch's handlers) and logs the heap they hold, per credential, after a
// GC. The figure is logged and bounded (900 B, 8 objects); the test fails if a
// credential is not served.
// -credmem.profile=FILE writes a heap profile while they are held.
func TestCredentialInformerMemory(t *testing.T) {
	const n = 10_000
	if *credMemProfile != "" {
		defer func(rate int) { runtime.MemProfileRate = rate }(runtime.MemProfileRate)
		runtime.MemProfileRate = 512 // close to every object of the credentials
	}
	ids, hashes := make([]string, n), make([]string, n)
	for i := range n {
		id, err := credential.NewClientID()
		if err != nil {
			t.Fatal(err)
		}
		secret, err := credential.NewSecret()
		if err != nil {
			t.Fatal(err)
		}
		ids[i], hashes[i] = id, credential.Hash(secret)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)

	store := NewStore()
	ci := newCredentialInformer(t, store, func() []*iamv1alpha1.APICredential {
		items := make([]*iamv1alpha1.APICredential, n)
		for i := range items {
			items[i] = decodeCredential(t, credentialJSON(i, ids[i], hashes[i]))
		}
		return items
	})
	go func() {
		for range ci.events { //nolint:revive // drained: this test reads the store, not events
		}
	}()
	ci.start(t)
	if got := store.Len(); got != n {
		t.Fatalf("store holds %d credentials, want %d", got, n)
	}
	for i, id := range ids {
		c, ok := store.Credential(id)
		if !ok || c.Name != fmt.Sprintf("team-%d/cred-%d", i%100, i) {
			t.Fatalf("client %d not served (%v)", i, ok)
		}
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	alloc, objects := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc))/n, (int64(after.HeapObjects)-int64(before.HeapObjects))/n
	t.Logf("%d credentials through the informer and the store: heap in use %.0f B/credential, heap alloc %.0f B/credential, %d objects/credential",
		n, float64(int64(after.HeapInuse)-int64(before.HeapInuse))/n, alloc, objects)
	// Bounds, not figures: the live heap after a GC is exact, and these fail on the
	// layout before issue 11's cut (1 143 B, 16 objects) with room for map growth.
	if alloc > 900 || objects > 8 {
		t.Errorf("%.0f B and %d objects held per credential, want at most 900 B and 8", alloc, objects)
	}
	if *credMemProfile != "" {
		f, err := os.Create(*credMemProfile)
		if err != nil {
			t.Fatal(err)
		}
		if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	runtime.KeepAlive(store)
	runtime.KeepAlive(ci)
}

// waitEvent waits for the informer to have handled one more event.
func (ci *credentialInformer) waitEvent(t *testing.T) {
	t.Helper()
	select {
	case <-ci.events:
	case <-time.After(10 * time.Second):
		t.Fatal("no event handled within 10s")
	}
}

// TestWatchReflectsUpdates: what the store serves follows the APICredential through the
// informer exactly: issue, rotation with a grace period, the previous secret expiring,
// deactivation, reactivation with new grants, a deletionTimestamp, deletion.
func TestWatchReflectsUpdates(t *testing.T) {
	id, _ := credential.NewClientID()
	secret1, _ := credential.NewSecret()
	secret2, _ := credential.NewSecret()
	store := NewStore()
	ci := newCredentialInformer(t, store, func() []*iamv1alpha1.APICredential { return nil })
	ci.start(t)

	base := decodeCredential(t, credentialJSON(7, id, credential.Hash(secret1)))
	key := types.NamespacedName{Namespace: "team-7", Name: "cred-7"}
	rv := 2000
	send := func(typ watch.EventType, mutate func(*iamv1alpha1.APICredential)) {
		t.Helper()
		obj := base.DeepCopy()
		mutate(obj)
		rv++
		obj.ResourceVersion = fmt.Sprint(rv)
		base = obj.DeepCopy()
		ci.watcher.Action(typ, obj)
		ci.waitEvent(t)
	}
	get := func() *Credential {
		t.Helper()
		c, ok := store.Credential(id)
		if !ok {
			t.Fatalf("client ID not served")
		}
		return c
	}
	now := time.Now()
	accepts := func(c *Credential, secret string) bool {
		for i := range c.secrets {
			if c.secrets[i].live(now) && c.secrets[i].verify(secret) {
				return true
			}
		}
		return false
	}

	// Created before it is issued: not served.
	send(watch.Added, func(o *iamv1alpha1.APICredential) { o.Status = iamv1alpha1.APICredentialStatus{} })
	if _, ok := store.Credential(id); ok || store.Len() != 0 {
		t.Fatal("a credential without an issued secret is served")
	}
	// Issued.
	send(watch.Modified, func(o *iamv1alpha1.APICredential) {
		*o = *decodeCredential(t, credentialJSON(7, id, credential.Hash(secret1)))
	})
	c := get()
	if c.Key != key || c.UID != base.UID || c.Account != "acme" || !c.usable(now) || !accepts(c, secret1) || accepts(c, secret2) {
		t.Fatalf("issued credential served as %+v", c)
	}
	if g, ok := c.grant("platform-api"); !ok || g.Permission != "user" {
		t.Fatalf("grant platform-api: %+v %v", g, ok)
	}
	if !c.hasWorkspace("eu-prod") || c.hasWorkspace("dev") {
		t.Fatalf("workspaces %v", c.Workspaces)
	}
	v1 := c.secrets[0].version

	// Rotated with a grace period: both secrets, tokens of the old version still valid.
	grace := metav1.NewTime(now.Add(time.Hour))
	send(watch.Modified, func(o *iamv1alpha1.APICredential) {
		o.Status.PreviousSecrets = []iamv1alpha1.PreviousSecret{{Hash: o.Status.SecretHash, ExpiresAt: grace}}
		o.Status.SecretHash = credential.Hash(secret2)
	})
	c = get()
	if !accepts(c, secret1) || !accepts(c, secret2) || !c.acceptsToken(v1, "", now) || c.secrets[0].version == v1 {
		t.Fatalf("rotation not reflected: %+v", c.secrets)
	}
	// The previous secret expired (the manager prunes it): old secret and its tokens refused.
	send(watch.Modified, func(o *iamv1alpha1.APICredential) { o.Status.PreviousSecrets = nil })
	c = get()
	if accepts(c, secret1) || !accepts(c, secret2) || c.acceptsToken(v1, "", now) {
		t.Fatalf("expiry of the previous secret not reflected: %+v", c.secrets)
	}
	// Deactivated.
	send(watch.Modified, func(o *iamv1alpha1.APICredential) { o.Spec.Active = new(false) })
	if get().usable(now) {
		t.Fatal("deactivation not reflected")
	}
	// Reactivated, a grant changed, the account moved.
	send(watch.Modified, func(o *iamv1alpha1.APICredential) {
		o.Spec.Active = nil
		o.Spec.APIs = []iamv1alpha1.APIGrant{{Name: "platform-api", Permission: "admin"}}
		o.Status.Account = "globex"
	})
	c = get()
	if g, _ := c.grant("platform-api"); !c.usable(now) || g.Permission != "admin" || c.Account != "globex" {
		t.Fatalf("update not reflected: %+v", c)
	}
	if _, ok := c.grant("profile-api"); ok {
		t.Fatal("a removed grant is still served")
	}
	if got := c.permissionHeader("platform-api"); len(got) != 1 || got[0] != "admin" {
		t.Fatalf("permission header %v", got)
	}
	if got := c.header(hdrAccount); len(got) != 1 || got[0] != "globex" {
		t.Fatalf("account header %v", got)
	}
	// Expired by spec.expiresAt.
	past := metav1.NewTime(now.Add(-time.Minute))
	send(watch.Modified, func(o *iamv1alpha1.APICredential) { o.Spec.ExpiresAt = &past })
	if get().usable(now) {
		t.Fatal("expiry not reflected")
	}
	send(watch.Modified, func(o *iamv1alpha1.APICredential) { o.Spec.ExpiresAt = nil })
	// Being deleted (a finalizer holds it): refused at once, still claims its client ID.
	deletion := metav1.NewTime(now)
	send(watch.Modified, func(o *iamv1alpha1.APICredential) { o.DeletionTimestamp = &deletion })
	if c = get(); c.usable(now) || !c.Terminating {
		t.Fatal("deletionTimestamp not reflected")
	}
	// Gone.
	send(watch.Deleted, func(*iamv1alpha1.APICredential) {})
	if _, ok := store.Credential(id); ok || store.Len() != 0 {
		t.Fatal("a deleted credential is still served")
	}
}
