// Package setupenvtest tests hack/setup-envtest.sh's choice of where the control-plane
// binaries come from: the envtest download first, the build from the Go module proxy when
// the download fails, kube-controller-manager always built, complete directories reused as
// they are. A fake `go` first on PATH stands in for the download and the builds (so no test
// builds Kubernetes); one case runs the real setup-envtest against a local index.
package setupenvtest

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha512"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"testing"

	"github.com/keysmith-dev/keysmith/internal/testenv"
)

const (
	kubeVersion = "1.37.2"
	etcdVersion = "3.7.3"
	builtName   = kubeVersion + "-etcd" + etcdVersion
	envtestName = kubeVersion + "-envtest"
	// downloadedEtcd is the version the fake downloaded etcd reports: not ETCD_VERSION, as
	// with the real envtest archives.
	downloadedEtcd = "3.6.9"
)

// platformDir is where setup-envtest unpacks an archive inside its --bin-dir.
var platformDir = filepath.Join("k8s", kubeVersion+"-"+runtime.GOOS+"-"+runtime.GOARCH)

// fakeGo stands in for go. FAKE_DOWNLOAD decides what `go run` (setup-envtest) does:
// fail, hang, work (fake kube-apiserver and etcd where setup-envtest puts them, the path on
// stdout), noetcd (the same without etcd) or real (the real go). `go build -o X P` writes a
// fake executable X naming P; `go mod download -json` names a go.mod with one staging
// replace; other `go mod` commands succeed; anything else fails.
const fakeGo = `#!/bin/sh
printf '%s\n' "$*" >>"$FAKE_GO_LOG"
for a; do last="$a"; done
case "$1" in
run)
	case "$FAKE_DOWNLOAD" in
	real) exec "$REAL_GO" "$@" ;;
	fail) echo "fake setup-envtest: unable to perform request to get index" >&2; exit 2 ;;
	hang) exec sleep 600 ;;
	work|noetcd)
		prev=""; bindir=""
		for a; do [ "$prev" = --bin-dir ] && bindir="$a"; prev="$a"; done
		dir="$bindir/k8s/$last-@PLATFORM@"
		mkdir -p "$dir"
		printf '#!/bin/sh\necho downloaded kube-apiserver\n' >"$dir/kube-apiserver"
		printf '#!/bin/sh\necho downloaded kubectl\n' >"$dir/kubectl"
		if [ "$FAKE_DOWNLOAD" = work ]; then
			printf '#!/bin/sh\necho "etcd Version: @ETCD@"\necho "Git SHA: fake"\n' >"$dir/etcd"
		fi
		chmod +x "$dir"/*
		printf '%s' "$dir"
		exit 0 ;;
	esac ;;
mod)
	if [ "$2" = download ]; then printf '{\n\t"Path": "k8s.io/kubernetes",\n\t"GoMod": "%s",\n}\n' "$FAKE_KUBE_GOMOD"; fi
	exit 0 ;;
build)
	prev=""; out=""
	for a; do [ "$prev" = -o ] && out="$a"; prev="$a"; done
	printf '#!/bin/sh\necho built %s\n' "$last" >"$out"
	chmod +x "$out"
	exit 0 ;;
esac
echo "fake go: unexpected go $*" >&2
exit 1
`

// sandbox is a copy of the script in a repository of its own (so its default bin/ is a temp
// directory), a HOME and XDG_CACHE_HOME of its own, and the fake go first on PATH.
type sandbox struct {
	t                *testing.T
	root, cache, log string
	env              []string
}

func newSandbox(t *testing.T, download string, extraEnv ...string) *sandbox {
	t.Helper()
	dir := t.TempDir()
	s := &sandbox{t: t, root: filepath.Join(dir, "repo"), cache: filepath.Join(dir, "cache"), log: filepath.Join(dir, "go.log")}
	script, err := os.ReadFile(filepath.Join(testenv.RepoRoot(), "hack", "setup-envtest.sh"))
	must(t, err)
	must(t, os.MkdirAll(filepath.Join(s.root, "hack"), 0o755))
	must(t, os.WriteFile(filepath.Join(s.root, "hack", "setup-envtest.sh"), script, 0o755))

	fakeBin := filepath.Join(dir, "fakebin")
	must(t, os.MkdirAll(fakeBin, 0o755))
	goScript := strings.NewReplacer("@PLATFORM@", runtime.GOOS+"-"+runtime.GOARCH, "@ETCD@", downloadedEtcd).Replace(fakeGo)
	must(t, os.WriteFile(filepath.Join(fakeBin, "go"), []byte(goScript), 0o755))
	kubeMod := filepath.Join(dir, "kubernetes.mod")
	must(t, os.WriteFile(kubeMod, []byte("module k8s.io/kubernetes\n\nreplace (\n\tk8s.io/api => ./staging/src/k8s.io/api\n)\n"), 0o644))

	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		switch {
		case name == "PATH", name == "HOME", name == "XDG_CACHE_HOME", name == "KUBEBUILDER_ASSETS",
			name == "KUBE_VERSION", name == "ETCD_VERSION", name == "SETUP_ENVTEST_VERSION",
			strings.HasPrefix(name, "ENVTEST_"), strings.HasPrefix(name, "FAKE_"):
			continue
		}
		s.env = append(s.env, kv)
	}
	s.env = append(s.env,
		"PATH="+fakeBin+string(os.PathListSeparator)+os.Getenv("PATH"),
		"HOME="+filepath.Join(dir, "home"), "XDG_CACHE_HOME="+s.cache,
		"FAKE_GO_LOG="+s.log, "FAKE_DOWNLOAD="+download, "FAKE_KUBE_GOMOD="+kubeMod)
	s.env = append(s.env, extraEnv...)
	return s
}

// result is one run of the script.
type result struct {
	stdout, stderr string
	goCalls        []string
}

func (s *sandbox) run(args ...string) result {
	s.t.Helper()
	_ = os.Remove(s.log)
	cmd := exec.Command(filepath.Join(s.root, "hack", "setup-envtest.sh"), args...)
	cmd.Env = s.env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		s.t.Fatalf("hack/setup-envtest.sh %v: %v\nstderr:\n%s", args, err, stderr.String())
	}
	s.t.Logf("stderr of hack/setup-envtest.sh %v:\n%s", args, stderr.String())
	r := result{stdout: strings.TrimSpace(stdout.String()), stderr: stderr.String()}
	if b, err := os.ReadFile(s.log); err == nil {
		r.goCalls = strings.Split(strings.TrimSpace(string(b)), "\n")
	}
	return r
}

func (s *sandbox) bin(name string) string { return filepath.Join(s.root, "bin", "k8s", name) }

// calls returns the go invocations with the given first word.
func (r result) calls(sub string) []string {
	var out []string
	for _, c := range r.goCalls {
		if strings.HasPrefix(c, sub+" ") {
			out = append(out, c)
		}
	}
	return out
}

// builtTargets returns the packages `go build` was asked for, each with its -o.
func (r result) builtTargets() map[string]string {
	out := map[string]string{}
	re := regexp.MustCompile(`-o (\S+) (\S+)$`)
	for _, c := range r.calls("build") {
		if m := re.FindStringSubmatch(c); m != nil {
			out[m[2]] = m[1]
		}
	}
	return out
}

func TestDownloadFailsBuildsAll(t *testing.T) {
	for _, tc := range []struct {
		name, download, why string
		env                 []string
	}{
		{"download fails", "fail", "download failed (exit status 2)", nil},
		{"download hangs", "hang", "download timed out after 1s", []string{"ENVTEST_DOWNLOAD_TIMEOUT=1"}},
		{"download lacks etcd", "noetcd", "download failed: no executable etcd", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newSandbox(t, tc.download, tc.env...)
			r := s.run()
			dest := s.bin(builtName)
			if r.stdout != dest {
				t.Fatalf("stdout %q, want the build directory %q", r.stdout, dest)
			}
			if len(r.calls("run")) != 1 {
				t.Errorf("go run calls %q, want one (setup-envtest)", r.calls("run"))
			}
			for _, want := range []string{tc.why, "falling back to building kube-apiserver and etcd from the Go module proxy"} {
				if !strings.Contains(r.stderr, want) {
					t.Errorf("stderr does not say %q:\n%s", want, r.stderr)
				}
			}
			wantBuilt := map[string]string{
				"go.etcd.io/etcd/server/v3":                     filepath.Join(dest, "etcd"),
				"k8s.io/kubernetes/cmd/kube-apiserver":          filepath.Join(dest, "kube-apiserver"),
				"k8s.io/kubernetes/cmd/kube-controller-manager": filepath.Join(dest, "kube-controller-manager"),
			}
			assertEqualMaps(t, "go build targets", r.builtTargets(), wantBuilt)
			if !contains(r.goCalls, "mod edit -replace=k8s.io/api=k8s.io/api@v0.37.2") {
				t.Errorf("the staging module k8s.io/api is not replaced by v0.37.2; go calls:\n%s", strings.Join(r.goCalls, "\n"))
			}
			wantOrigin := "etcd build go.etcd.io/etcd/server/v3 v" + etcdVersion + "\n" +
				"kube-apiserver build k8s.io/kubernetes v" + kubeVersion + "\n" +
				"kube-controller-manager build k8s.io/kubernetes v" + kubeVersion + "\n"
			for _, dir := range []string{dest, filepath.Join(s.cache, "keysmith", "k8s", builtName)} {
				assertFile(t, filepath.Join(dir, "ORIGIN"), wantOrigin)
				assertFile(t, filepath.Join(dir, "kube-apiserver"), "#!/bin/sh\necho built k8s.io/kubernetes/cmd/kube-apiserver\n")
				assertFile(t, filepath.Join(dir, "etcd"), "#!/bin/sh\necho built go.etcd.io/etcd/server/v3\n")
			}
			assertAbsent(t, s.bin(envtestName))
		})
	}
}

func TestDownloadWorksBuildsOnlyControllerManager(t *testing.T) {
	s := newSandbox(t, "work", "ENVTEST_INDEX_URL=http://127.0.0.1:1/envtest-releases.yaml")
	r := s.run()
	dest := s.bin(envtestName)
	if r.stdout != dest {
		t.Fatalf("stdout %q, want the envtest directory %q", r.stdout, dest)
	}
	runs := r.calls("run")
	if len(runs) != 1 {
		t.Fatalf("go run calls %q, want one", runs)
	}
	fields := strings.Fields(runs[0])
	wantArgs := []string{"run", "-trimpath", "sigs.k8s.io/controller-runtime/tools/setup-envtest@v0.25.1", "use", "--bin-dir", "<store>",
		"-p", "path", "--installed-only=false", "--use-env=false", "--verify=true",
		"--index", "http://127.0.0.1:1/envtest-releases.yaml", kubeVersion}
	if len(fields) != len(wantArgs) {
		t.Fatalf("go %s\nwant go %s", runs[0], strings.Join(wantArgs, " "))
	}
	for i := range wantArgs {
		if wantArgs[i] != "<store>" && fields[i] != wantArgs[i] {
			t.Errorf("go run argument %d is %q, want %q (go %s)", i, fields[i], wantArgs[i], runs[0])
		}
	}
	assertEqualMaps(t, "go build targets", r.builtTargets(), map[string]string{
		"k8s.io/kubernetes/cmd/kube-controller-manager": filepath.Join(dest, "kube-controller-manager"),
	})
	for _, want := range []string{"using the downloaded kube-apiserver and etcd (etcd " + downloadedEtcd, "kube-controller-manager is not in the download", "building kube-controller-manager"} {
		if !strings.Contains(r.stderr, want) {
			t.Errorf("stderr does not say %q:\n%s", want, r.stderr)
		}
	}
	what := "envtest " + filepath.Base(platformDir) + " from http://127.0.0.1:1/envtest-releases.yaml (setup-envtest v0.25.1)"
	wantOrigin := "kube-apiserver download " + what + "\n" +
		"etcd download " + what + ": etcd " + downloadedEtcd + "\n" +
		"kube-controller-manager build k8s.io/kubernetes v" + kubeVersion + "\n"
	cacheDir := filepath.Join(s.cache, "keysmith", "k8s", envtestName)
	for _, dir := range []string{dest, cacheDir} {
		assertFile(t, filepath.Join(dir, "ORIGIN"), wantOrigin)
		assertFile(t, filepath.Join(dir, "kube-apiserver"), "#!/bin/sh\necho downloaded kube-apiserver\n")
		assertFile(t, filepath.Join(dir, "kube-controller-manager"), "#!/bin/sh\necho built k8s.io/kubernetes/cmd/kube-controller-manager\n")
		assertAbsent(t, filepath.Join(dir, "kubectl"))
	}
	assertAbsent(t, s.bin(builtName))

	t.Run("complete bin is used without go", func(t *testing.T) {
		r := s.run()
		if r.stdout != dest || len(r.goCalls) != 0 || r.stderr != "" {
			t.Errorf("stdout %q, go calls %q, stderr %q; want %q, none, nothing", r.stdout, r.goCalls, r.stderr, dest)
		}
	})
	t.Run("a fresh clone copies the cache without go", func(t *testing.T) {
		must(t, os.RemoveAll(filepath.Join(s.root, "bin")))
		r := s.run()
		if r.stdout != dest || len(r.goCalls) != 0 {
			t.Errorf("stdout %q, go calls %q; want %q, none", r.stdout, r.goCalls, dest)
		}
		assertFile(t, filepath.Join(dest, "ORIGIN"), wantOrigin)
	})
	t.Run("an explicit DEST gets the download", func(t *testing.T) {
		other := newSandbox(t, "work")
		explicit := filepath.Join(t.TempDir(), "assets")
		r := other.run(explicit)
		if r.stdout != explicit {
			t.Fatalf("stdout %q, want %q", r.stdout, explicit)
		}
		assertFile(t, filepath.Join(explicit, "etcd"), fmt.Sprintf("#!/bin/sh\necho \"etcd Version: %s\"\necho \"Git SHA: fake\"\n", downloadedEtcd))
		assertFile(t, filepath.Join(other.cache, "keysmith", "k8s", envtestName, "ORIGIN"), "") // any content: present
	})
}

// TestCompleteDirectoriesUsedAsIs: directories filled before ORIGIN existed (like a
// machine's bin/k8s/1.37.2-etcd3.7.3) are used without a download or build, and not written.
func TestCompleteDirectoriesUsedAsIs(t *testing.T) {
	fill := func(t *testing.T, dir string) {
		must(t, os.MkdirAll(dir, 0o755))
		for _, b := range []string{"kube-apiserver", "etcd", "kube-controller-manager"} {
			must(t, os.WriteFile(filepath.Join(dir, b), []byte("#!/bin/sh\necho old "+b+"\n"), 0o755))
		}
	}
	noGo := func(t *testing.T, r result, want string) {
		t.Helper()
		if r.stdout != want || len(r.goCalls) != 0 {
			t.Errorf("stdout %q, go calls %q; want %q and no go at all", r.stdout, r.goCalls, want)
		}
	}
	t.Run("bin", func(t *testing.T) {
		s := newSandbox(t, "work")
		fill(t, s.bin(builtName))
		noGo(t, s.run(), s.bin(builtName))
		assertAbsent(t, filepath.Join(s.bin(builtName), "ORIGIN"))
		assertAbsent(t, s.bin(envtestName))
	})
	t.Run("cache", func(t *testing.T) {
		s := newSandbox(t, "work")
		cacheDir := filepath.Join(s.cache, "keysmith", "k8s", builtName)
		fill(t, cacheDir)
		r := s.run()
		noGo(t, r, s.bin(builtName))
		assertFile(t, filepath.Join(s.bin(builtName), "etcd"), "#!/bin/sh\necho old etcd\n")
		assertAbsent(t, filepath.Join(s.bin(builtName), "ORIGIN"))
		assertAbsent(t, filepath.Join(cacheDir, "ORIGIN"))
	})
	t.Run("KUBEBUILDER_ASSETS", func(t *testing.T) {
		assets := filepath.Join(t.TempDir(), "assets")
		fill(t, assets)
		s := newSandbox(t, "work", "KUBEBUILDER_ASSETS="+assets)
		noGo(t, s.run(), assets)
		assertAbsent(t, filepath.Join(s.root, "bin"))
	})
	t.Run("an incomplete KUBEBUILDER_ASSETS is not used", func(t *testing.T) {
		assets := t.TempDir()
		s := newSandbox(t, "fail", "KUBEBUILDER_ASSETS="+assets)
		if r := s.run(); r.stdout != s.bin(builtName) {
			t.Errorf("stdout %q, want %q", r.stdout, s.bin(builtName))
		}
	})
	t.Run("ENVTEST_DOWNLOAD=false builds without trying", func(t *testing.T) {
		s := newSandbox(t, "work", "ENVTEST_DOWNLOAD=false")
		r := s.run()
		if r.stdout != s.bin(builtName) || len(r.calls("run")) != 0 || len(r.builtTargets()) != 3 {
			t.Errorf("stdout %q, go calls %q; want %q, no go run, three builds", r.stdout, r.goCalls, s.bin(builtName))
		}
	})
}

// TestRealSetupEnvtest runs the real setup-envtest (go run from the module proxy, as the
// script does) against a local index and archive: the flags the script passes are the
// tool's, the archive's checksum is enforced, and the index URL's credentials are not
// logged or recorded.
func TestRealSetupEnvtest(t *testing.T) {
	realGo, err := exec.LookPath("go")
	must(t, err)
	var goEnv []string
	for _, name := range []string{"GOENV", "GOPATH", "GOMODCACHE", "GOCACHE", "GOPROXY", "GOSUMDB", "GONOSUMDB", "GOPRIVATE", "GOFLAGS"} {
		out, err := exec.Command(realGo, "env", name).Output()
		must(t, err)
		goEnv = append(goEnv, name+"="+strings.TrimSpace(string(out)))
	}

	archive := envtestArchive(t, map[string]string{
		"kube-apiserver": "#!/bin/sh\necho served kube-apiserver\n",
		"etcd":           "#!/bin/sh\necho 'etcd Version: " + downloadedEtcd + "'\n",
		"kubectl":        "#!/bin/sh\necho served kubectl\n",
	})
	sum := sha512.Sum512(archive)
	archiveName := "envtest-v" + kubeVersion + "-" + runtime.GOOS + "-" + runtime.GOARCH + ".tar.gz"
	otherSum := sha512.Sum512([]byte("another archive"))
	hashes := map[string]string{"good": hex.EncodeToString(sum[:]), "bad": hex.EncodeToString(otherSum[:])}
	mux := http.NewServeMux()
	server := httptest.NewServer(mux)
	t.Cleanup(server.Close)
	mux.HandleFunc("GET /{hash}/envtest-releases.yaml", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "releases:\n  v%s:\n    %s:\n      hash: %s\n      selfLink: %s/%s\n",
			kubeVersion, archiveName, hashes[r.PathValue("hash")], server.URL, archiveName)
	})
	mux.HandleFunc("GET /"+archiveName, func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write(archive) })
	sandboxEnv := func(hash string) []string {
		index := strings.Replace(server.URL, "://", "://reader:s3cret-user@", 1) + "/" + hash + "/envtest-releases.yaml?token=s3cret-query"
		return append([]string{"REAL_GO=" + realGo, "ENVTEST_INDEX_URL=" + index}, goEnv...)
	}

	t.Run("served archive", func(t *testing.T) {
		s := newSandbox(t, "real", sandboxEnv("good")...)
		r := s.run()
		dest := s.bin(envtestName)
		if r.stdout != dest {
			t.Fatalf("stdout %q, want %q", r.stdout, dest)
		}
		assertFile(t, filepath.Join(dest, "kube-apiserver"), "#!/bin/sh\necho served kube-apiserver\n")
		assertEqualMaps(t, "go build targets", r.builtTargets(), map[string]string{
			"k8s.io/kubernetes/cmd/kube-controller-manager": filepath.Join(dest, "kube-controller-manager"),
		})
		origin, err := os.ReadFile(filepath.Join(dest, "ORIGIN"))
		must(t, err)
		want := "etcd download envtest " + filepath.Base(platformDir) + " from " + server.URL + "/good/envtest-releases.yaml (setup-envtest v0.25.1): etcd " + downloadedEtcd + "\n"
		if !strings.Contains(string(origin), want) {
			t.Errorf("ORIGIN:\n%s\nwant the line %q", origin, want)
		}
		for what, text := range map[string]string{"stderr": r.stderr, "ORIGIN": string(origin)} {
			if strings.Contains(text, "s3cret") {
				t.Errorf("%s holds the index URL's credentials:\n%s", what, text)
			}
		}
	})
	t.Run("checksum mismatch falls back to the build", func(t *testing.T) {
		s := newSandbox(t, "real", sandboxEnv("bad")...)
		r := s.run()
		if r.stdout != s.bin(builtName) || len(r.builtTargets()) != 3 {
			t.Errorf("stdout %q, builds %v; want %q and three builds", r.stdout, r.builtTargets(), s.bin(builtName))
		}
		if !strings.Contains(r.stderr, "checksum mismatch") {
			t.Errorf("stderr does not name the checksum mismatch:\n%s", r.stderr)
		}
		assertAbsent(t, s.bin(envtestName))
	})
}

// envtestArchive is a tar.gz laid out like controller-tools' envtest archives.
func envtestArchive(t *testing.T, files map[string]string) []byte {
	var buf bytes.Buffer
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, content := range files {
		must(t, tw.WriteHeader(&tar.Header{Name: "controller-tools/envtest/" + name, Mode: 0o755, Size: int64(len(content)), Typeflag: tar.TypeReg}))
		_, err := tw.Write([]byte(content))
		must(t, err)
	}
	must(t, tw.Close())
	must(t, gz.Close())
	return buf.Bytes()
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func contains(list []string, s string) bool {
	for _, l := range list {
		if l == s {
			return true
		}
	}
	return false
}

// assertFile checks a file's content; an empty want checks only that it exists.
func assertFile(t *testing.T, path, want string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("%s: %v", path, err)
		return
	}
	if want != "" && string(b) != want {
		t.Errorf("%s is\n%s\nwant\n%s", path, b, want)
	}
}

func assertAbsent(t *testing.T, path string) {
	t.Helper()
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Errorf("%s exists (or cannot be checked: %v), want it absent", path, err)
	}
}

func assertEqualMaps(t *testing.T, what string, got, want map[string]string) {
	t.Helper()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("%s: got %v, want %v", what, got, want)
	}
}
