package e2e

import (
	"context"
	"fmt"
	"sort"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"
)

// A client-go watch in protobuf, as informers of built-in types watch,
// goes on across a crash of each subscriber in turn: the router frames
// the length-prefixed WatchEvents, resumes from the last one on the
// agent's other stream, and client-go's result channel never closes and
// sees every creation once, in order.
func TestProtobufWatchSurvivesSubscriberCrashes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	const ns = "e2e-protowatch"
	must(t, kubeconfig(t, "admin"), "", "create", "namespace", ns)
	cfg := throughTether(t)
	cfg.ContentType = "application/vnd.kubernetes.protobuf"
	cfg.AcceptContentTypes = "application/vnd.kubernetes.protobuf,application/json"
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	list, err := cs.CoreV1().ConfigMaps(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w, err := cs.CoreV1().ConfigMaps(ns).Watch(ctx, metav1.ListOptions{ResourceVersion: list.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	resumes := sum(t, `tether_router_watch_resumes_total{result="resumed"}`, routers()...)

	created := make(chan error, 1)
	go func() {
		for i := range 60 {
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p%02d", i)}}
			if _, err := cs.CoreV1().ConfigMaps(ns).Create(ctx, cm, metav1.CreateOptions{}); err != nil {
				created <- fmt.Errorf("create %s: %w", cm.Name, err)
				return
			}
			time.Sleep(200 * time.Millisecond)
		}
		created <- nil
	}()
	crashEachSubscriber(ctx, t)
	if err := <-created; err != nil {
		t.Fatal(err)
	}

	var got []string
	var rvs []string
	for len(got) < 60 {
		select {
		case ev, ok := <-w.ResultChan():
			if !ok {
				t.Fatalf("the watch closed after %d events", len(got))
			}
			if ev.Type == watch.Error {
				t.Fatalf("error event: %v", ev.Object)
			}
			cm := ev.Object.(*corev1.ConfigMap)
			if cm.Name == "kube-root-ca.crt" {
				continue
			}
			if ev.Type != watch.Added {
				t.Fatalf("event %d: %s %s", len(got), ev.Type, cm.Name)
			}
			got, rvs = append(got, cm.Name), append(rvs, cm.ResourceVersion)
		case <-time.After(30 * time.Second):
			t.Fatalf("the watch saw %d of 60 creations: %v", len(got), got)
		}
	}
	for i, name := range got {
		if want := fmt.Sprintf("p%02d", i); name != want {
			t.Fatalf("event %d is %s, want %s: %v", i, name, want, got)
		}
	}
	if !sort.SliceIsSorted(rvs, func(i, j int) bool { return rvLess(rvs[i], rvs[j]) }) {
		t.Fatalf("resourceVersions out of order: %v", rvs)
	}
	if n := sum(t, `tether_router_watch_resumes_total{result="resumed"}`, routers()...) - resumes; n < 1 {
		t.Fatalf("the watch was never resumed (%v): it did not lose a subscriber", n)
	}
	devStillServed(t)
}
