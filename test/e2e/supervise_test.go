package e2e

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/clientcmd"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/keysmith-dev/keysmith/internal/testenv"
)

// make dev's supervision (DESIGN §5): one environment per checkout, a component's crash
// ends it, nothing is left behind, a SIGKILLed make dev's leftovers are stopped by the
// next. Each spec drives the built binary from outside, on dev directories and ports of
// its own; start-ups are few (each costs ~15-30 s of CPU), so checks share them.

var _ = Describe("make dev, a second instance and a token server's crash", Ordered, func() {
	var first *devInstance

	BeforeAll(func() {
		first = startDev(filepath.Join("bin", "e2e-devsup-a"), freeAddr())
		first.waitReady()
	})
	AfterAll(func() { first.cleanUp() })

	// stillReady expects the first environment to be up and its own: make dev running,
	// its kubeconfig as it wrote it, its API server and token server answering.
	stillReady := func(ctx SpecContext, kubeconfig []byte) {
		ExpectWithOffset(1, first.exited()).To(BeFalse(), "the first make dev still runs")
		now, err := os.ReadFile(filepath.Join(first.absDir(), "kubeconfig"))
		ExpectWithOffset(1, err).NotTo(HaveOccurred())
		ExpectWithOffset(1, now).To(Equal(kubeconfig), "the first environment's kubeconfig is untouched")
		cfg, err := clientcmd.RESTConfigFromKubeConfig(now)
		ExpectWithOffset(1, err).NotTo(HaveOccurred())
		c, err := client.New(cfg, client.Options{Scheme: testenv.Scheme()})
		ExpectWithOffset(1, err).NotTo(HaveOccurred())
		ExpectWithOffset(1, c.List(ctx, &corev1.NamespaceList{})).To(Succeed())
		resp, err := http.Get("http://" + first.addr + "/readyz")
		ExpectWithOffset(1, err).NotTo(HaveOccurred())
		resp.Body.Close()
		ExpectWithOffset(1, resp.StatusCode).To(Equal(http.StatusOK))
		first.running()
	}

	It("refuses a second make dev on the same directory within seconds, naming the first, touching nothing of it", func(ctx SpecContext) {
		kubeconfig, err := os.ReadFile(filepath.Join(first.absDir(), "kubeconfig"))
		Expect(err).NotTo(HaveOccurred())
		before := first.running()

		// Another port, so that the directory's lock, not the port, is what refuses it.
		start := time.Now()
		second := startDev(first.dir, freeAddr())
		defer second.kill()
		Expect(second.exitCode(10 * time.Second)).NotTo(Equal(0))
		GinkgoWriter.Printf("second make dev refused after %s\n", time.Since(start))
		Expect(second.stderr.String()).To(ContainSubstring(fmt.Sprintf("%s is in use by another make dev (pid %d)", first.dir, first.cmd.Process.Pid)))
		Expect(second.stdout.String()).NotTo(ContainSubstring(readyPrefix))

		stillReady(ctx, kubeconfig)
		Expect(first.running()).To(Equal(before), "the first environment's processes are the same")
	})

	It("refuses a make dev on another directory but the same port within seconds, naming what holds it", func(ctx SpecContext) {
		kubeconfig, err := os.ReadFile(filepath.Join(first.absDir(), "kubeconfig"))
		Expect(err).NotTo(HaveOccurred())
		ts := first.running()["token-server"]

		other := startDev(filepath.Join("bin", "e2e-devsup-a2"), first.addr)
		defer other.kill()
		Expect(other.exitCode(10 * time.Second)).NotTo(Equal(0))
		Expect(other.stderr.String()).To(ContainSubstring(fmt.Sprintf("the token server's address %s is in use by pid %d (%s)",
			first.addr, ts.pid, filepath.Join(first.absDir(), "token-server"))))
		Expect(other.stdout.String()).NotTo(ContainSubstring(readyPrefix))
		Expect(devProcesses(other.dir)).To(BeEmpty())
		_, err = os.Stat(other.absDir())
		Expect(os.IsNotExist(err)).To(BeTrue(), "the refused make dev's directory is removed")

		stillReady(ctx, kubeconfig)
	})

	It("ends within 30 s when its token server is killed (kill -9), naming it and its log, leaving nothing behind", func() {
		endsWhenKilled(first, "token-server", "the token server")
	})
})

var _ = Describe("make dev, SIGKILLed, and a manager's crash", Ordered, func() {
	var killed, next *devInstance
	dir := filepath.Join("bin", "e2e-devsup-b")

	AfterAll(func() {
		killed.cleanUp()
		next.cleanUp()
	})

	It("has the leftovers of a make dev killed with SIGKILL stopped by the next make dev", func() {
		addr := freeAddr()
		killed = startDev(dir, addr)
		killed.waitReady()
		procs := killed.running()
		Expect(killed.cmd.Process.Kill()).To(Succeed())
		Expect(killed.exitCode(10 * time.Second)).To(Equal(-1)) // killed by a signal

		By("leaving etcd and kube-apiserver running: envtest starts them without Pdeathsig")
		Expect(alive(procs["etcd"])).To(BeTrue())
		Expect(alive(procs["kube-apiserver"])).To(BeTrue())

		By("stopping them when the next make dev starts on the directory")
		next = startDev(dir, addr)
		next.waitReady()
		Expect(next.stderr.String()).To(MatchRegexp(`stopped what an earlier make dev left running: .*kube-apiserver \(pid %d\), etcd \(pid %d\)`,
			procs["kube-apiserver"].pid, procs["etcd"].pid))
		for name, p := range procs {
			Expect(alive(p)).To(BeFalse(), "%s (pid %d) of the killed make dev", name, p.pid)
		}
		now := next.running()
		for name, p := range now {
			Expect(p).NotTo(Equal(procs[name]))
		}
	})

	It("ends within 30 s when its manager is killed (kill -9), naming it and its log, leaving nothing behind", func() {
		Expect(next).NotTo(BeNil())
		endsWhenKilled(next, "manager", "the manager")
	})
})

// endsWhenKilled kills d's component name with SIGKILL and expects make dev to end within
// 30 s, naming it (what) and its log, which it keeps, and leaving nothing behind.
func endsWhenKilled(d *devInstance, name, what string) {
	procs := d.running()
	p := procs[name]
	ExpectWithOffset(1, syscall.Kill(p.pid, syscall.SIGKILL)).To(Succeed())
	start := time.Now()
	ExpectWithOffset(1, d.exitCode(30*time.Second)).To(Equal(1))
	GinkgoWriter.Printf("make dev ended %s after its %s was killed\n", time.Since(start), name)
	ExpectWithOffset(1, d.stderr.String()).To(ContainSubstring(fmt.Sprintf(
		"keysmith dev: %s (pid %d) exited (signal: killed); its log: %s/%s.log", what, p.pid, d.dir, name)))
	ExpectWithOffset(1, filepath.Join(d.absDir(), name+".log")).To(BeAnExistingFile(), "the log it names is kept")
	expectNothingLeft(d.dir, procs)
}
