package kube

import (
	"os"
	"os/exec"
	"testing"
	"time"
)

func TestScratch(t *testing.T) {
	dir := "/tmp/kubescratch"
	os.RemoveAll(dir)
	bin := os.Getenv("HOME") + "/.cache/tether/kube/k8s-v1.34.4-etcd-v3.6.16/bin"
	t0 := time.Now()
	cp, err := Start(t.Context(), Config{BinDir: bin, Dir: dir, Log: testWriter{t}})
	if err != nil {
		t.Fatal(err)
	}
	t.Log("start", time.Since(t0))
	out, err := exec.Command("kubectl", "--kubeconfig", cp.AdminKubeconfig, "version").CombinedOutput()
	t.Logf("%s %v", out, err)
	out, err = exec.Command("kubectl", "--kubeconfig", cp.AdminKubeconfig, "create", "deployment", "x", "--image=nginx").CombinedOutput()
	t.Logf("%s %v", out, err)
	time.Sleep(2 * time.Second)
	out, err = exec.Command("kubectl", "--kubeconfig", cp.AdminKubeconfig, "get", "rs,pods,sa,cm", "-A").CombinedOutput()
	t.Logf("%s %v", out, err)
	t0 = time.Now()
	t.Log(cp.Stop(), time.Since(t0))
}
