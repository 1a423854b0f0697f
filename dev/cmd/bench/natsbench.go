package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// natsResult compares the two request paths of ADR 001.
type natsResult struct {
	core, wq, pubAck  samples
	noResp            samples
	noRespErr         string
	wqHeld            time.Duration // how long a request to a cluster with no consumer waited
	wqHeldMsgs        uint64        // messages the stream kept for it
	storage, srvVer   string
	iterations, warm  int
	payload, replyLen int
}

// benchNATS starts an embedded NATS server with JetStream in dir and times a
// 200-byte request answered with a 200-byte reply, on core NATS and through
// a JetStream work queue.
func benchNATS(ctx context.Context, dir string, iterations, warm int) (*natsResult, error) {
	ns, err := server.NewServer(&server.Options{
		ServerName: "bench", Host: "127.0.0.1", Port: -1,
		JetStream: true, StoreDir: dir, NoLog: true, NoSigs: true,
	})
	if err != nil {
		return nil, err
	}
	go ns.Start()
	defer func() { ns.Shutdown(); ns.WaitForShutdown() }()
	if !ns.ReadyForConnections(10 * time.Second) {
		return nil, errors.New("nats: server not ready")
	}
	// Requester and responder on separate connections, as router and
	// subscriber are separate processes.
	req, err := nats.Connect(ns.ClientURL())
	if err != nil {
		return nil, err
	}
	defer req.Close()
	resp, err := nats.Connect(ns.ClientURL())
	if err != nil {
		return nil, err
	}
	defer resp.Close()

	r := &natsResult{storage: "file", srvVer: server.VERSION, iterations: iterations, warm: warm, payload: 200, replyLen: 200}
	payload, reply := make([]byte, r.payload), make([]byte, r.replyLen)

	// (a) Core NATS request/reply.
	sub, err := resp.Subscribe("core.dev", func(m *nats.Msg) { _ = m.Respond(reply) })
	if err != nil {
		return nil, err
	}
	if err := resp.Flush(); err != nil {
		return nil, err
	}
	for i := 0; i < warm+iterations; i++ {
		start := time.Now()
		_, err := req.Request("core.dev", payload, 5*time.Second)
		if i >= warm {
			r.core.add(time.Since(start), err)
		}
	}
	_ = sub.Unsubscribe()

	// No responders: nobody listens on the subject.
	for i := 0; i < 200; i++ {
		start := time.Now()
		_, err := req.Request("core.gone", payload, 5*time.Second)
		if errors.Is(err, nats.ErrNoResponders) {
			r.noResp.add(time.Since(start), nil)
		} else {
			r.noResp.add(0, fmt.Errorf("expected no responders, got %v", err))
		}
	}

	// (b) JetStream work queue: one consumer for the cluster's subject.
	jsReq, err := jetstream.New(req)
	if err != nil {
		return nil, err
	}
	jsResp, err := jetstream.New(resp)
	if err != nil {
		return nil, err
	}
	stream, err := jsReq.CreateStream(ctx, jetstream.StreamConfig{
		Name: "WQ", Subjects: []string{"wq.>"}, Retention: jetstream.WorkQueuePolicy, Storage: jetstream.FileStorage,
	})
	if err != nil {
		return nil, err
	}
	cons, err := jsResp.CreateOrUpdateConsumer(ctx, "WQ", jetstream.ConsumerConfig{
		Durable: "dev", FilterSubject: "wq.dev", AckPolicy: jetstream.AckExplicitPolicy,
	})
	if err != nil {
		return nil, err
	}
	cc, err := cons.Consume(func(m jetstream.Msg) {
		if to := m.Headers().Get("Bench-Reply"); to != "" {
			_ = resp.Publish(to, reply)
		}
		_ = m.Ack()
	})
	if err != nil {
		return nil, err
	}
	defer cc.Stop()
	inbox := req.NewInbox()
	replies, err := req.SubscribeSync(inbox)
	if err != nil {
		return nil, err
	}
	if err := req.Flush(); err != nil {
		return nil, err
	}
	wqRequest := func(subject string, timeout time.Duration) (time.Duration, time.Duration, error) {
		c, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		m := nats.NewMsg(subject)
		m.Header.Set("Bench-Reply", inbox)
		m.Data = payload
		start := time.Now()
		if _, err := jsReq.PublishMsg(c, m); err != nil {
			return 0, 0, err
		}
		acked := time.Since(start)
		if _, err := replies.NextMsgWithContext(c); err != nil {
			return acked, time.Since(start), err
		}
		return acked, time.Since(start), nil
	}
	for i := 0; i < warm+iterations; i++ {
		acked, total, err := wqRequest("wq.dev", 5*time.Second)
		if i >= warm {
			r.wq.add(total, err)
			r.pubAck.add(acked, err)
		}
	}

	// A work queue has no "no responders": a request for a cluster with no
	// consumer is stored and acknowledged, and the requester waits.
	_, held, err := wqRequest("wq.gone", time.Second)
	if !errors.Is(err, context.DeadlineExceeded) {
		r.noRespErr = fmt.Sprintf("work queue request to a cluster with no consumer: expected a timeout, got %v", err)
	}
	r.wqHeld = held
	if info, err := stream.Info(ctx); err == nil {
		r.wqHeldMsgs = info.State.Msgs
	}
	return r, nil
}

func natsTempDir() (string, error) { return os.MkdirTemp("", "tether-bench-nats-") }
