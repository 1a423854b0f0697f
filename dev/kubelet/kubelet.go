// Package kubelet is a development node: a small kubelet that registers a
// Node with a real kube-apiserver, runs the pods bound to it as host
// processes, and serves the kubelet's streaming endpoints (exec, attach,
// port-forward, container logs) with the Kubernetes streaming server
// library, so kubectl's interactive verbs can be tested end to end.
//
// It runs commands, not images, on the machine it runs on: a test fixture,
// never something to deploy. A container that names only an image gets a
// stand-in process (Config.StandIn) instead, so ordinary Deployments come
// up; the node says so in an Event and in the pod's status, as it says why
// a container it cannot start waits.
package kubelet

import (
	"context"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/client-go/util/retry"
)

// Config configures a Node.
type Config struct {
	Client kubernetes.Interface
	// Name of the Node object.
	Name string
	// Listener serves the kubelet API; its port is registered as the
	// node's kubelet endpoint. TLS is required: the kube-apiserver always
	// speaks HTTPS to kubelets.
	Listener net.Listener
	TLS      *tls.Config
	// StateDir holds each pod's working folder and container logs.
	StateDir string
	// PodCIDR gives each pod a loopback address of its own, so pod
	// processes can listen on $POD_IP without clashing.
	PodCIDR netip.Prefix
	// StreamIdleTimeout closes exec, attach and port-forward sessions idle
	// this long, like the kubelet's --streaming-connection-idle-timeout.
	StreamIdleTimeout     time.Duration
	StreamCreationTimeout time.Duration
	// StandIn is the program run for a container that names no command,
	// only an image, which a node of host processes cannot run: podtool,
	// run as "StandIn standin --image IMAGE --ports P,...", which serves
	// the container's declared ports and sleeps.
	StandIn string
	Log     *slog.Logger
}

// Node is a running development node.
type Node struct {
	cfg  Config
	host string // 127.0.0.1, the node's InternalIP

	// events records what happens to pods as Events, as a kubelet does; set
	// by Run.
	events record.EventRecorder

	mu     sync.Mutex
	pods   map[types.UID]*pod
	nextIP netip.Addr
}

// RandomPodCIDR picks a /24 in 127.100.0.0–127.199.255.255 for a node's
// pods, so nodes of separate stacks on one machine (a test run next to
// make run, two test packages at once) never give two pods one address.
func RandomPodCIDR() netip.Prefix {
	var b [2]byte
	_, _ = rand.Read(b[:])
	return netip.PrefixFrom(netip.AddrFrom4([4]byte{127, 100 + b[0]%100, b[1], 0}), 24)
}

// New validates cfg.
func New(cfg Config) (*Node, error) {
	switch {
	case cfg.Client == nil, cfg.Listener == nil, cfg.TLS == nil, cfg.Log == nil:
		return nil, errors.New("kubelet: client, listener, TLS and log are required")
	case cfg.Name == "", cfg.StateDir == "", cfg.StandIn == "":
		return nil, errors.New("kubelet: name, state folder and stand-in program are required")
	case !cfg.PodCIDR.IsValid() || !cfg.PodCIDR.Addr().IsLoopback():
		return nil, fmt.Errorf("kubelet: pod CIDR %v must be a loopback range", cfg.PodCIDR)
	}
	if cfg.StreamIdleTimeout <= 0 {
		cfg.StreamIdleTimeout = 4 * time.Hour
	}
	if cfg.StreamCreationTimeout <= 0 {
		cfg.StreamCreationTimeout = 30 * time.Second
	}
	return &Node{cfg: cfg, host: "127.0.0.1", pods: map[types.UID]*pod{}, nextIP: cfg.PodCIDR.Masked().Addr().Next()}, nil
}

// Run registers the node, keeps it alive, runs its pods and serves the
// kubelet API until ctx ends; then it stops every container.
func (n *Node) Run(ctx context.Context) error {
	if err := n.register(ctx); err != nil {
		return err
	}
	// The broadcaster aggregates repeated events and drops what its queue
	// cannot hold, so a crash-looping container cannot flood the API.
	events := record.NewBroadcaster(record.WithContext(ctx))
	defer events.Shutdown()
	events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: n.cfg.Client.CoreV1().Events("")})
	n.events = events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kubelet", Host: n.cfg.Name})

	srv := &http.Server{Handler: n.handler(), TLSConfig: n.cfg.TLS, ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(tls.NewListener(n.cfg.Listener, n.cfg.TLS)) }()

	factory := informers.NewSharedInformerFactoryWithOptions(n.cfg.Client, 0, informers.WithTweakListOptions(func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("spec.nodeName", n.cfg.Name).String()
	}))
	informer := factory.Core().V1().Pods().Informer()
	if _, err := informer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { n.sync(ctx, obj) },
		UpdateFunc: func(_, obj any) { n.sync(ctx, obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if p, ok := obj.(*corev1.Pod); ok {
				n.forget(p.UID)
			}
		},
	}); err != nil {
		return fmt.Errorf("watching pods: %w", err)
	}
	factory.Start(ctx.Done())

	heartbeat := time.NewTicker(10 * time.Second)
	defer heartbeat.Stop()
	beats := 0
	for {
		select {
		case err := <-served:
			return fmt.Errorf("serving the kubelet API: %w", err)
		case <-heartbeat.C:
			beats++
			// The lease says alive every 10 s; the status, with its Ready
			// condition, once a minute, as a kubelet does.
			if err := n.renewLease(ctx); err != nil {
				n.cfg.Log.Warn("renewing the node lease", "err", err)
			}
			if beats%6 == 0 {
				if err := n.postStatus(ctx); err != nil {
					n.cfg.Log.Warn("posting node status", "err", err)
				}
			}
		case <-ctx.Done():
			factory.Shutdown()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = srv.Shutdown(sctx)
			n.stopAll()
			return nil
		}
	}
}

func (n *Node) port() int32 { return int32(n.cfg.Listener.Addr().(*net.TCPAddr).Port) }

func (n *Node) register(ctx context.Context) error {
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: n.cfg.Name, Labels: map[string]string{
			"kubernetes.io/hostname": n.cfg.Name, "kubernetes.io/os": "linux", "tether.dev/node": "development",
		}},
	}
	_, err := n.cfg.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("registering node %s: %w", n.cfg.Name, err)
	}
	if err := n.postStatus(ctx); err != nil {
		return err
	}
	return n.renewLease(ctx)
}

func (n *Node) postStatus(ctx context.Context) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		node, err := n.cfg.Client.CoreV1().Nodes().Get(ctx, n.cfg.Name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		now := metav1.Now()
		since := now
		for _, c := range node.Status.Conditions {
			if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
				since = c.LastTransitionTime
			}
		}
		capacity := corev1.ResourceList{
			corev1.ResourceCPU: resource.MustParse("8"), corev1.ResourceMemory: resource.MustParse("16Gi"), corev1.ResourcePods: resource.MustParse("250"),
		}
		node.Status = corev1.NodeStatus{
			Capacity: capacity, Allocatable: capacity,
			Phase:           corev1.NodeRunning,
			Addresses:       []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: n.host}, {Type: corev1.NodeHostName, Address: n.cfg.Name}},
			DaemonEndpoints: corev1.NodeDaemonEndpoints{KubeletEndpoint: corev1.DaemonEndpoint{Port: n.port()}},
			NodeInfo:        corev1.NodeSystemInfo{KubeletVersion: "v1.34.4-tether-dev", OperatingSystem: "linux", Architecture: runtime.GOARCH, ContainerRuntimeVersion: "host://process"},
			Conditions: []corev1.NodeCondition{{
				Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady", Message: "development node is posting ready status",
				LastHeartbeatTime: now, LastTransitionTime: since,
			}},
		}
		_, err = n.cfg.Client.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{})
		return err
	})
}

func (n *Node) renewLease(ctx context.Context) error {
	leases := n.cfg.Client.CoordinationV1().Leases(corev1.NamespaceNodeLease)
	now := metav1.NewMicroTime(time.Now())
	duration := int32(40)
	l, err := leases.Get(ctx, n.cfg.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		_, err = leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: n.cfg.Name, Namespace: corev1.NamespaceNodeLease},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: &n.cfg.Name, LeaseDurationSeconds: &duration, RenewTime: &now},
		}, metav1.CreateOptions{})
		return err
	}
	if err != nil {
		return err
	}
	l.Spec.HolderIdentity, l.Spec.LeaseDurationSeconds, l.Spec.RenewTime = &n.cfg.Name, &duration, &now
	_, err = leases.Update(ctx, l, metav1.UpdateOptions{})
	return err
}

// pod is a pod bound to this node.
type pod struct {
	node      *Node
	uid       types.UID
	namespace string
	name      string
	ip        netip.Addr
	dir       string
	restart   corev1.RestartPolicy
	started   metav1.Time
	// ref is what the pod's Events are about.
	ref corev1.ObjectReference

	mu         sync.Mutex
	containers []*container
	stopping   bool
	// execs are the process groups of running exec sessions: they end
	// with the pod, as they would with its containers' cgroups.
	execs map[int]struct{}
}

// willRestart reports whether inst, which has exited, is to be followed by
// another instance of its container.
func (p *pod) willRestart(inst *instance) bool {
	p.mu.Lock()
	stopping := p.stopping
	p.mu.Unlock()
	if stopping {
		return false
	}
	return p.restart == corev1.RestartPolicyAlways || (p.restart == corev1.RestartPolicyOnFailure && inst.exitCode != 0)
}

// errTerminating refuses an exec in a pod being torn down.
var errTerminating = errors.New("pod is terminating")

// addExec records an exec session's process group; it fails once the pod
// is stopping, so nothing new starts in a pod being torn down.
func (p *pod) addExec(pgid int) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopping {
		return fmt.Errorf("pod %q: %w", p.name, errTerminating)
	}
	if p.execs == nil {
		p.execs = map[int]struct{}{}
	}
	p.execs[pgid] = struct{}{}
	return nil
}

func (p *pod) removeExec(pgid int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	delete(p.execs, pgid)
}

// stop ends every container within grace, then every exec session.
func (p *pod) stop(grace time.Duration) {
	p.mu.Lock()
	p.stopping = true
	containers := p.containers
	p.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range containers {
		if inst := c.current(); inst != nil {
			wg.Add(1)
			go func() { defer wg.Done(); inst.stop(grace) }()
		}
	}
	wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	for pgid := range p.execs {
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
	}
}

func (p *pod) env(vars []corev1.EnvVar) []string {
	env := []string{"PATH=" + os.Getenv("PATH"), "HOME=" + p.dir, "POD_NAME=" + p.name, "POD_NAMESPACE=" + p.namespace, "POD_IP=" + p.ip.String()}
	for _, v := range vars {
		if v.ValueFrom == nil {
			env = append(env, v.Name+"="+v.Value)
		}
	}
	return env
}

func (p *pod) workDir(dir string) string {
	if dir != "" {
		return dir
	}
	return p.dir
}

func (p *pod) container(name string) *container {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.containers {
		if c.spec.Name == name || name == "" {
			return c
		}
	}
	return nil
}

func (p *pod) log(msg string, args ...any) {
	p.node.cfg.Log.Info(msg, append([]any{"pod", p.namespace + "/" + p.name}, args...)...)
}

// event records an Event about one of the pod's containers, with the field
// path a kubelet gives it.
func (p *pod) event(container, eventType, reason, message string) {
	ref := p.ref
	ref.FieldPath = "spec.containers{" + container + "}"
	p.node.events.Event(&ref, eventType, reason, message)
}

// sync brings a pod from the informer to life, or to its end.
func (n *Node) sync(ctx context.Context, obj any) {
	kp, ok := obj.(*corev1.Pod)
	if !ok {
		return
	}
	n.mu.Lock()
	p := n.pods[kp.UID]
	if p == nil && kp.DeletionTimestamp == nil && kp.Status.Phase != corev1.PodSucceeded && kp.Status.Phase != corev1.PodFailed {
		p = &pod{
			node: n, uid: kp.UID, namespace: kp.Namespace, name: kp.Name, ip: n.allocateIP(),
			dir: filepath.Join(n.cfg.StateDir, "pods", string(kp.UID)), restart: kp.Spec.RestartPolicy, started: metav1.Now(),
			ref: corev1.ObjectReference{Kind: "Pod", APIVersion: "v1", Namespace: kp.Namespace, Name: kp.Name, UID: kp.UID, ResourceVersion: kp.ResourceVersion},
		}
		n.pods[kp.UID] = p
		n.mu.Unlock()
		n.startPod(ctx, p, kp)
		return
	}
	n.mu.Unlock()
	switch {
	case p != nil && kp.DeletionTimestamp != nil:
		go n.deletePod(ctx, p, kp)
	case p == nil && kp.DeletionTimestamp != nil:
		// Deleted while no node ran it (this one was down): nothing runs,
		// but only the node bound to a pod finishes its deletion.
		go n.finishDeletion(ctx, kp.Namespace, kp.Name, kp.UID)
	}
}

// allocateIP hands out the pod CIDR's addresses in turn, skipping those of
// pods still here: a long-lived pod keeps its address however many come
// and go. n.mu must be held.
func (n *Node) allocateIP() netip.Addr {
	used := make(map[netip.Addr]bool, len(n.pods))
	for _, p := range n.pods {
		used[p.ip] = true
	}
	for range 1 << (n.nextIP.BitLen() - n.cfg.PodCIDR.Bits()) {
		ip := n.nextIP
		if n.nextIP = ip.Next(); !n.cfg.PodCIDR.Contains(n.nextIP) {
			n.nextIP = n.cfg.PodCIDR.Masked().Addr().Next()
		}
		if !used[ip] {
			return ip
		}
	}
	// Every address is taken: pods share one, and may clash on ports.
	return n.nextIP
}

func (n *Node) startPod(ctx context.Context, p *pod, kp *corev1.Pod) {
	if err := os.MkdirAll(p.dir, 0o755); err != nil {
		n.cfg.Log.Error("creating pod folder", "err", err)
		return
	}
	p.mu.Lock()
	for _, spec := range kp.Spec.Containers {
		p.containers = append(p.containers, &container{pod: p, spec: spec})
	}
	containers := p.containers
	p.mu.Unlock()
	for _, c := range containers {
		c.start()
		go n.supervise(ctx, p, c)
	}
	n.updateStatus(ctx, p)
}

// supervise restarts a container by the pod's policy and reports each
// change of state.
func (n *Node) supervise(ctx context.Context, p *pod, c *container) {
	backoff := time.Second
	for {
		inst := c.current()
		select {
		case <-ctx.Done():
			return
		case <-inst.exited:
		}
		n.updateStatus(ctx, p)
		if !p.willRestart(inst) {
			return
		}
		p.event(c.spec.Name, corev1.EventTypeWarning, "BackOff", backOffMessage(c, inst))
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 10*time.Second)
		if !p.willRestart(inst) { // deleted during the backoff
			return
		}
		c.start()
		n.updateStatus(ctx, p)
	}
}

// updateStatus writes the pod's status as a kubelet would.
func (n *Node) updateStatus(ctx context.Context, p *pod) {
	err := retry.RetryOnConflict(retry.DefaultRetry, func() error {
		kp, err := n.cfg.Client.CoreV1().Pods(p.namespace).Get(ctx, p.name, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if kp.UID != p.uid {
			return nil
		}
		st := p.status()
		// A condition that did not change keeps the time it last did.
		for i, c := range st.Conditions {
			for _, old := range kp.Status.Conditions {
				if old.Type == c.Type && old.Status == c.Status {
					st.Conditions[i].LastTransitionTime = old.LastTransitionTime
				}
			}
		}
		kp.Status = st
		_, err = n.cfg.Client.CoreV1().Pods(p.namespace).UpdateStatus(ctx, kp, metav1.UpdateOptions{})
		return err
	})
	if err != nil && !apierrors.IsNotFound(err) && ctx.Err() == nil {
		n.cfg.Log.Warn("updating pod status", "pod", p.namespace+"/"+p.name, "err", err)
	}
}

func (p *pod) status() corev1.PodStatus {
	p.mu.Lock()
	containers := p.containers
	p.mu.Unlock()
	st := corev1.PodStatus{
		HostIP: p.node.host, HostIPs: []corev1.HostIP{{IP: p.node.host}},
		PodIP: p.ip.String(), PodIPs: []corev1.PodIP{{IP: p.ip.String()}},
		StartTime: &p.started, QOSClass: corev1.PodQOSBestEffort,
	}
	// Counted as the kubelet's getPhase counts them.
	var waiting, running, restarting, failed int
	var standIns []string
	for _, c := range containers {
		c.mu.Lock()
		inst, restarts := c.instance, c.restarts
		c.mu.Unlock()
		cs := corev1.ContainerStatus{
			Name: c.spec.Name, Image: c.spec.Image, ImageID: "host://" + c.spec.Image,
			RestartCount: int32(restarts), Started: new(bool),
		}
		restartPending := inst != nil && !inst.running() && p.willRestart(inst)
		if last := c.lastTerminated(restartPending); last != nil {
			cs.LastTerminationState.Terminated = last.terminated()
		}
		switch {
		case inst == nil:
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
		case inst.running():
			cs.ContainerID, cs.Ready, *cs.Started = inst.id, true, true
			cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.NewTime(inst.started)}
			if inst.standIn {
				standIns = append(standIns, standInMessage(c.spec))
			}
		case restartPending:
			cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff", Message: backOffMessage(c, inst)}
		default:
			cs.ContainerID = inst.id
			cs.State.Terminated = inst.terminated()
		}
		switch {
		case cs.State.Running != nil:
			running++
		case restartPending:
			restarting++
		case cs.State.Terminated != nil:
			if cs.State.Terminated.ExitCode != 0 {
				failed++
			}
		default:
			waiting++ // never ran
		}
		st.ContainerStatuses = append(st.ContainerStatuses, cs)
	}
	switch {
	case waiting > 0:
		st.Phase = corev1.PodPending
	case running > 0 || restarting > 0:
		st.Phase = corev1.PodRunning
	case failed > 0:
		st.Phase = corev1.PodFailed
	default:
		st.Phase = corev1.PodSucceeded
	}
	// Shown by kubectl describe; kubectl get still says Running.
	st.Message = strings.Join(standIns, " ")
	ready := corev1.ConditionFalse
	if running == len(containers) {
		ready = corev1.ConditionTrue
	}
	now := metav1.Now()
	for _, t := range []corev1.PodConditionType{corev1.PodScheduled, corev1.PodInitialized, corev1.PodReadyToStartContainers} {
		st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: corev1.ConditionTrue, LastTransitionTime: p.started})
	}
	for _, t := range []corev1.PodConditionType{corev1.ContainersReady, corev1.PodReady} {
		st.Conditions = append(st.Conditions, corev1.PodCondition{Type: t, Status: ready, LastTransitionTime: now})
	}
	return st
}

// deletePod stops a pod's containers within its grace period (at most two
// seconds here) and removes the pod, as the kubelet finishes a deletion.
func (n *Node) deletePod(ctx context.Context, p *pod, kp *corev1.Pod) {
	p.mu.Lock()
	if p.stopping {
		p.mu.Unlock()
		return
	}
	p.stopping = true
	p.mu.Unlock()
	grace := 2 * time.Second
	if g := kp.DeletionGracePeriodSeconds; g != nil && time.Duration(*g)*time.Second < grace {
		grace = time.Duration(*g) * time.Second
	}
	p.stop(grace)
	n.finishDeletion(ctx, p.namespace, p.name, p.uid)
	n.forget(p.uid)
}

// finishDeletion removes a pod whose processes are gone, as the kubelet
// ends a graceful deletion. The UID precondition spares a new pod of the
// same name.
func (n *Node) finishDeletion(ctx context.Context, namespace, name string, uid types.UID) {
	zero := int64(0)
	err := n.cfg.Client.CoreV1().Pods(namespace).Delete(ctx, name, metav1.DeleteOptions{GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &uid}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		n.cfg.Log.Warn("deleting pod", "pod", namespace+"/"+name, "err", err)
	}
}

// forget drops a pod that is gone from the API, stopping what still runs.
func (n *Node) forget(uid types.UID) {
	n.mu.Lock()
	p := n.pods[uid]
	delete(n.pods, uid)
	n.mu.Unlock()
	if p != nil {
		p.stop(time.Second)
	}
}

func (n *Node) stopAll() {
	n.mu.Lock()
	uids := make([]types.UID, 0, len(n.pods))
	for uid := range n.pods {
		uids = append(uids, uid)
	}
	n.mu.Unlock()
	var wg sync.WaitGroup
	for _, uid := range uids {
		wg.Add(1)
		go func() { defer wg.Done(); n.forget(uid) }()
	}
	wg.Wait()
}

// lookup finds a running pod by namespace and name.
func (n *Node) lookup(namespace, name string) *pod {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, p := range n.pods {
		if p.namespace == namespace && p.name == name {
			return p
		}
	}
	return nil
}

// backOffMessage says why a container waits to be restarted: what ended its
// last run, when that was a failure to start it at all.
func backOffMessage(c *container, inst *instance) string {
	msg := fmt.Sprintf("back-off restarting failed container %s in pod %s", c.spec.Name, c.pod.name)
	if inst.err != nil {
		msg += ": " + inst.err.Error()
	}
	return msg
}
