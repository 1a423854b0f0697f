package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/tether-dev/tether/dev/stack"
)

// Restart backoff: a service that keeps dying is started again at most
// every restartMax; one that ran restartReset or longer starts over at
// restartMin.
const (
	restartMin   = time.Second
	restartMax   = 30 * time.Second
	restartReset = time.Minute
)

// keepUp watches the stack's services until ctx ends, and starts again
// any that exits, logging each exit and restart to log, so a crash can be
// watched and survived by hand (kill a router, see requests carry on).
func keepUp(ctx context.Context, s *stack.Stack, log io.Writer) error {
	type state struct {
		started time.Time
		backoff time.Duration
	}
	// One entry per service the stack started: bounded by its size.
	services := map[string]*state{}
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(time.Second):
		}
		// The cluster itself is not one of Tether's services: a stack
		// whose kube-apiserver or etcd died shows nothing worth keeping.
		if s.Kube != nil {
			if err := s.Kube.Exited(); err != nil {
				return fmt.Errorf("the control plane stopped: %w", err)
			}
		}
		for _, name := range s.Names() {
			p := s.Process(name)
			if p == nil || !p.Exited() {
				continue
			}
			st := services[name]
			if st == nil || time.Since(st.started) >= restartReset {
				st = &state{backoff: restartMin}
				services[name] = st
			}
			how := "exit status 0"
			if err := errors.Unwrap(p.ExitError()); err != nil {
				how = err.Error()
			}
			fmt.Fprintf(log, "%s tether-dev: %s exited (%s); starting it again in %s (log %s)\n",
				time.Now().Format(time.TimeOnly), name, how, st.backoff, p.LogPath)
			select {
			case <-ctx.Done():
				return nil
			case <-time.After(st.backoff):
			}
			st.started = time.Now()
			st.backoff = min(2*st.backoff, restartMax)
			if err := s.Restart(ctx, name); err != nil {
				if ctx.Err() != nil {
					return nil
				}
				fmt.Fprintf(log, "%s tether-dev: %s did not come back: %v\n", time.Now().Format(time.TimeOnly), name, err)
				continue
			}
			fmt.Fprintf(log, "%s tether-dev: %s restarted (pid %d) and ready\n", time.Now().Format(time.TimeOnly), name, s.Process(name).Pid())
		}
	}
}
