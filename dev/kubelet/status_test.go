package kubelet_test

// What the node tells about containers it runs in another's place or
// cannot start: status messages and Events, as a kubelet records them.

import (
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

// A container that names only an image, as `kubectl create deployment
// --image=nginx` makes, runs the stand-in: the pod is Running, serves the
// declared port, and says what runs in place of the image, in an Event
// and in its status.
func TestImageOnlyRunsAStandIn(t *testing.T) {
	t.Parallel()
	spec := podSpec("image-only", corev1.RestartPolicyAlways, corev1.Container{Ports: []corev1.ContainerPort{{ContainerPort: 8080}}})
	spec.Spec.Containers[0].Image = "nginx"
	p := createPod(t, spec, "Running", running)
	if !strings.Contains(p.Status.Message, `stand-in for image "nginx"`) || !strings.Contains(p.Status.Message, "8080") {
		t.Errorf("status message %q does not say a stand-in serves port 8080 for nginx", p.Status.Message)
	}
	if cs := p.Status.ContainerStatuses[0]; cs.State.Running == nil || !cs.Ready {
		t.Errorf("container state %+v, ready %v; want running and ready", cs.State, cs.Ready)
	}
	waitEvent(t, p, corev1.EventTypeNormal, "StandIn", `stand-in for image "nginx"`)

	client := &http.Client{Timeout: 2 * time.Second}
	var body string
	err := poll(t.Context(), 10*time.Second, func() bool { // Running comes before the server listens
		resp, err := client.Get("http://" + net.JoinHostPort(p.Status.PodIP, "8080") + "/")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		body = string(b)
		return resp.StatusCode == http.StatusOK
	})
	if err != nil || !strings.Contains(body, "stand-in") {
		t.Errorf("GET port 8080 of the stand-in: %v, %q", err, body)
	}
	if out, err := logs(t.Context(), "image-only", &corev1.PodLogOptions{}); err != nil || !strings.Contains(out, `stand-in for image "nginx"`) {
		t.Errorf("stand-in's log %q, %v", out, err)
	}
}

// A command this machine does not have cannot start: the container waits
// to be restarted and says why, in its status and in Events, as a kubelet
// reports what its runtime could not start.
func TestCommandNotFound(t *testing.T) {
	t.Parallel()
	p := createPod(t, podSpec("not-found", corev1.RestartPolicyAlways, corev1.Container{Command: []string{"tether-no-such-command", "--flag"}}),
		"waiting in back-off", func(p *corev1.Pod) bool {
			cs := p.Status.ContainerStatuses
			return len(cs) == 1 && cs[0].State.Waiting != nil && cs[0].State.Waiting.Reason == "CrashLoopBackOff"
		})
	cs := p.Status.ContainerStatuses[0]
	if !strings.Contains(cs.State.Waiting.Message, `"tether-no-such-command"`) || !strings.Contains(cs.State.Waiting.Message, "not found") {
		t.Errorf("waiting message %q does not say the command was not found", cs.State.Waiting.Message)
	}
	if last := cs.LastTerminationState.Terminated; last == nil || last.Reason != "StartError" || !strings.Contains(last.Message, "not found") {
		t.Errorf("last termination state %+v, want StartError saying not found", cs.LastTerminationState)
	}
	if p.Status.Phase != corev1.PodRunning {
		t.Errorf("phase %s, want Running (a container in back-off, as a kubelet counts it)", p.Status.Phase)
	}
	waitEvent(t, p, corev1.EventTypeWarning, "Failed", "executable file not found")
	waitEvent(t, p, corev1.EventTypeWarning, "BackOff", "back-off restarting failed container main")
}

// waitEvent waits for an Event about pod's container main.
func waitEvent(t *testing.T, p *corev1.Pod, eventType, reason, text string) {
	t.Helper()
	var seen []string
	err := poll(t.Context(), 30*time.Second, func() bool {
		list, err := env.client.CoreV1().Events(p.Namespace).List(t.Context(), metav1.ListOptions{FieldSelector: "involvedObject.uid=" + string(p.UID)})
		if err != nil {
			return false
		}
		seen = seen[:0]
		for _, e := range list.Items {
			seen = append(seen, e.Type+" "+e.Reason+": "+e.Message)
			if e.Type == eventType && e.Reason == reason && strings.Contains(e.Message, text) &&
				e.InvolvedObject.FieldPath == "spec.containers{main}" && e.Source.Component == "kubelet" && e.Source.Host == nodeName {
				return true
			}
		}
		return false
	})
	if err != nil {
		t.Errorf("no %s event %s saying %q about pod %s; events: %q", eventType, reason, text, p.Name, seen)
	}
}
