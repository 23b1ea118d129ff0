package cli

import (
	"context"
	"fmt"
	"io"
	"sync"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/cli-runtime/pkg/genericclioptions"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/kubectl/pkg/util/term"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	iamv1alpha1 "github.com/keysmith-dev/keysmith/api/v1alpha1"
)

// scheme holds the Kubernetes types and keysmith's.
var scheme = func() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := iamv1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}()

// env is what every command gets: the streams, the kubectl flags, a clock, and a client
// of the cluster built on first use, so that --help and the completion of static words
// need no cluster.
type env struct {
	streams Streams
	flags   *genericclioptions.ConfigFlags
	clock   clock.Clock

	// newClient builds the client; tests replace it with a fake.
	newClient func() (client.WithWatch, error)
	// terminal reports whether a stream is a terminal; tests replace it.
	terminal func(any) bool

	once      sync.Once
	client    client.WithWatch
	clientErr error
}

func newEnv(streams Streams, flags *genericclioptions.ConfigFlags) *env {
	e := &env{streams: streams, flags: flags, clock: clock.RealClock{}, terminal: term.IsTerminal}
	e.newClient = e.clusterClient
	return e
}

// restConfig returns the REST config of the kubeconfig, --context, --server, … flags.
func (e *env) restConfig() (*rest.Config, error) {
	cfg, err := e.flags.ToRESTConfig()
	if err != nil {
		return nil, userError("cannot load a kubeconfig: "+oneLine(err.Error()), "set --kubeconfig or KUBECONFIG, or --context")
	}
	cfg = rest.CopyConfig(cfg)
	cfg.UserAgent = fieldManager + "/" + buildVersion()
	return cfg, nil
}

func (e *env) clusterClient() (client.WithWatch, error) {
	cfg, err := e.restConfig()
	if err != nil {
		return nil, err
	}
	c, err := client.NewWithWatch(cfg, client.Options{Scheme: scheme})
	if err != nil {
		return nil, kubeError(err, "connect to the Kubernetes API server")
	}
	return c, nil
}

// Client returns the cluster client (built once). Its writes carry the field manager
// kubectl-keysmith; Create, Patch and Update set it, SSA patches too.
func (e *env) Client() (client.WithWatch, error) {
	e.once.Do(func() {
		c, err := e.newClient()
		if err != nil {
			e.clientErr = err
			return
		}
		e.client = withFieldOwner{WithWatch: c}
	})
	return e.client, e.clientErr
}

// Namespace returns the namespace of -n, else the kubeconfig context's, else "default".
func (e *env) Namespace() (string, error) {
	ns, _, err := e.flags.ToRawKubeConfigLoader().Namespace()
	if err != nil {
		return "", userError("cannot read the namespace from the kubeconfig: "+oneLine(err.Error()), "pass -n NAMESPACE or fix --kubeconfig")
	}
	return ns, nil
}

// isTerminal reports whether a stream (e.streams.In, e.streams.Out) is a terminal.
func (e *env) isTerminal(stream any) bool { return e.terminal(stream) }

// in, out and errOut are the command's streams.
func (e *env) in() io.Reader     { return e.streams.In }
func (e *env) out() io.Writer    { return e.streams.Out }
func (e *env) errOut() io.Writer { return e.streams.ErrOut }

// getCredential reads the APICredential name of namespace ns, with a NotFound that says
// where it looked and how to list what exists.
func (e *env) getCredential(ctx context.Context, ns, name string) (*iamv1alpha1.APICredential, error) {
	c, err := e.Client()
	if err != nil {
		return nil, err
	}
	cred := &iamv1alpha1.APICredential{}
	if err := c.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, cred); err != nil {
		if apierrors.IsNotFound(err) {
			return nil, userError(fmt.Sprintf("credential %q not found in namespace %q", name, ns),
				fmt.Sprintf("see the credentials there with '%s list -n %s'", commandName, ns))
		}
		return nil, kubeError(err, fmt.Sprintf("read credential %q in namespace %q", name, ns))
	}
	return cred, nil
}

// withFieldOwner sets the field manager kubectl-keysmith on every write.
type withFieldOwner struct{ client.WithWatch }

func (c withFieldOwner) Create(ctx context.Context, obj client.Object, opts ...client.CreateOption) error {
	return c.WithWatch.Create(ctx, obj, append([]client.CreateOption{client.FieldOwner(fieldManager)}, opts...)...)
}

func (c withFieldOwner) Update(ctx context.Context, obj client.Object, opts ...client.UpdateOption) error {
	return c.WithWatch.Update(ctx, obj, append([]client.UpdateOption{client.FieldOwner(fieldManager)}, opts...)...)
}

func (c withFieldOwner) Patch(ctx context.Context, obj client.Object, patch client.Patch, opts ...client.PatchOption) error {
	return c.WithWatch.Patch(ctx, obj, patch, append([]client.PatchOption{client.FieldOwner(fieldManager)}, opts...)...)
}
