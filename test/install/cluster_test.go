package install

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// webhookRouter is the field manager that points the webhook configuration at the local
// webhook server (the test's stand-in for the Service), a writer of its own beside the
// applier and the manager that keeps the caBundle.
const webhookRouter = "keysmith-install-test-kube-proxy"

// installation is the pods of one applied manifest and the Services that reach them: the
// test's stand-in for kube-proxy and cluster DNS, which an envtest lacks.
type installation struct {
	objs      []*unstructured.Unstructured
	namespace string
	pods      []*pod
}

// serviceAddr resolves port of the Service namespace/name, as kube-proxy does, to the
// local address of the one Deployment whose pods the Service selects: the Service's
// targetPort (by name or number) must be a port of that container, bound by its process.
func (in *installation) serviceAddr(namespace, name string, port int32) (string, error) {
	svc := &corev1.Service{}
	if err := find(in.objs, "Service", namespace, name, svc); err != nil {
		return "", err
	}
	var target *intstr.IntOrString
	for _, sp := range svc.Spec.Ports {
		if sp.Port == port {
			t := sp.TargetPort
			if t.Type == intstr.Int && t.IntVal == 0 {
				t = intstr.FromInt32(sp.Port)
			}
			target = &t
		}
	}
	if target == nil {
		return "", fmt.Errorf("Service %s/%s has no port %d", namespace, name, port)
	}
	var selected []*pod
	for _, p := range in.pods {
		if p.selectedBy(svc) {
			selected = append(selected, p)
		}
	}
	if len(selected) != 1 {
		names := make([]string, len(selected))
		for i, p := range selected {
			names[i] = p.deployment.Name
		}
		return "", fmt.Errorf("Service %s/%s (selector %v) selects the pods of %d running Deployments %v, not one", namespace, name, svc.Spec.Selector, len(selected), names)
	}
	return selected[0].localAddr(*target)
}

// dialContext dials <service>.<namespace>.svc[.cluster.local]:<port> at the local address
// serviceAddr resolves it to, and refuses every other address: nothing the test's
// clients are given leaves the machine.
func (in *installation) dialContext(ctx context.Context, network, addr string) (net.Conn, error) {
	host, portText, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, err
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return nil, err
	}
	name, rest, _ := strings.Cut(strings.TrimSuffix(host, ".cluster.local"), ".")
	namespace, svcSuffix, _ := strings.Cut(rest, ".")
	if svcSuffix != "svc" {
		return nil, fmt.Errorf("%s is not a Service address of the installation", addr)
	}
	local, err := in.serviceAddr(namespace, name, int32(port))
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	return d.DialContext(ctx, network, local)
}

// pointWebhooksAtPods rewrites, in the live ValidatingWebhookConfigurations of the
// manifest, each webhook's clientConfig from its Service to
// https://localhost:<port><path>, the port being the local one of the Service's target,
// so that the API server reaches the manager's webhook server as it would through the
// Service. It changes nothing else (the caBundle stays the manager's to keep) and writes
// as a field manager of its own. It returns the substitutions made.
func (in *installation) pointWebhooksAtPods(ctx context.Context, c client.Client) ([]string, error) {
	var subs []string
	for _, obj := range in.objs {
		if obj.GetKind() != "ValidatingWebhookConfiguration" {
			continue
		}
		err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
			subs = subs[:0]
			vwc := &admissionregistrationv1.ValidatingWebhookConfiguration{}
			if err := c.Get(ctx, client.ObjectKey{Name: obj.GetName()}, vwc); err != nil {
				return err
			}
			for i := range vwc.Webhooks {
				wh := &vwc.Webhooks[i]
				svc := wh.ClientConfig.Service
				if svc == nil {
					return fmt.Errorf("ValidatingWebhookConfiguration %s: webhook %s calls %v, not a Service", vwc.Name, wh.Name, wh.ClientConfig.URL)
				}
				port := int32(443)
				if svc.Port != nil {
					port = *svc.Port
				}
				local, err := in.serviceAddr(svc.Namespace, svc.Name, port)
				if err != nil {
					return fmt.Errorf("ValidatingWebhookConfiguration %s: webhook %s: %w", vwc.Name, wh.Name, err)
				}
				_, localPort, _ := net.SplitHostPort(local)
				u := (&url.URL{Scheme: "https", Host: net.JoinHostPort("localhost", localPort), Path: derefOr(svc.Path, "/")}).String()
				subs = append(subs, fmt.Sprintf("webhook %s: clientConfig.service %s/%s:%d%s -> url %s", wh.Name, svc.Namespace, svc.Name, port, derefOr(svc.Path, ""), u))
				wh.ClientConfig.Service, wh.ClientConfig.URL = nil, &u
			}
			return c.Update(ctx, vwc, client.FieldOwner(webhookRouter))
		})
		if err != nil {
			return nil, err
		}
	}
	return subs, nil
}

// checkServices dials every port of every Service of the manifest through serviceAddr:
// each must select one of the running Deployments and reach a port its process listens
// on (the manager's metrics Service, which the ServiceMonitor scrapes, as much as the two
// the test uses).
func (in *installation) checkServices(ctx context.Context) error {
	var errs []error
	for _, obj := range in.objs {
		if obj.GetKind() != "Service" {
			continue
		}
		svc := &corev1.Service{}
		if err := fromUnstructured(obj, svc); err != nil {
			return err
		}
		for _, sp := range svc.Spec.Ports {
			host := fmt.Sprintf("%s.%s.svc", svc.Name, svc.Namespace)
			conn, err := in.dialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(int(sp.Port))))
			if err != nil {
				errs = append(errs, fmt.Errorf("Service %s/%s port %d (%s): %w", svc.Namespace, svc.Name, sp.Port, sp.Name, err))
				continue
			}
			conn.Close()
		}
	}
	return errors.Join(errs...)
}

func derefOr(s *string, def string) string {
	if s == nil {
		return def
	}
	return *s
}
