package registry

import (
	"context"
	"crypto/sha256"
	"errors"
	"fmt"

	"connectrpc.com/connect"
	"github.com/nats-io/nats.go/jetstream"
	"google.golang.org/protobuf/proto"

	"github.com/tether-dev/tether/lib/clusters"
	tetherv1 "github.com/tether-dev/tether/lib/gen/tether/v1"
	"github.com/tether-dev/tether/lib/subject"
)

// MaxEnsure is how many clusters one EnsureClusters call takes.
const MaxEnsure = 1000

// EnsureClusters creates the clusters that do not exist and issues each a
// bootstrap token. Its events are the same as CreateCluster's and
// IssueBootstrapToken's, with the same expected-sequence checks, but
// written in two pipelined rounds (every creation, then every token)
// rather than two round trips per cluster: 10,000 clusters take seconds.
func (r *Registry) EnsureClusters(ctx context.Context, req *connect.Request[tetherv1.EnsureClustersRequest]) (*connect.Response[tetherv1.EnsureClustersResponse], error) {
	resp, err := r.ensureClusters(ctx, req.Msg.GetClusters(), actor(req.Header().Get(ActorHeader)))
	return resp, r.count("ensure", err)
}

func (r *Registry) ensureClusters(ctx context.Context, want []*tetherv1.CreateClusterRequest, by string) (*connect.Response[tetherv1.EnsureClustersResponse], error) {
	if len(want) == 0 || len(want) > MaxEnsure {
		return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("%d clusters: a call takes 1 to %d", len(want), MaxEnsure))
	}
	seen := make(map[string]bool, len(want))
	for _, m := range want {
		switch {
		case !subject.ValidClusterID(m.GetId()):
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("cluster id %q must be a DNS label: lower-case letters, digits and '-', at most 63", m.GetId()))
		case !subject.ValidClusterID(m.GetTenant()):
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("tenant %q must be a DNS label", m.GetTenant()))
		case seen[m.GetId()]:
			return nil, connect.NewError(connect.CodeInvalidArgument, fmt.Errorf("cluster %q is named twice", m.GetId()))
		}
		seen[m.GetId()] = true
	}
	if err := r.sync(ctx); err != nil {
		return nil, err
	}
	// Where each cluster's next event goes: after its creation, or after
	// its latest event if it exists.
	seqs := make([]uint64, len(want))
	var created []*tetherv1.ClusterEvent
	var createdAt []int
	for i, m := range want {
		if cl, ok := r.cfg.Clusters.Get(m.GetId()); ok {
			if cl.Tenant != m.GetTenant() {
				return nil, connect.NewError(connect.CodeFailedPrecondition, fmt.Errorf("cluster %q exists for another tenant", m.GetId()))
			}
			seqs[i] = r.cfg.Clusters.LastSeq(m.GetId())
			continue
		}
		created = append(created, &tetherv1.ClusterEvent{ClusterId: m.GetId(), Actor: by, Kind: &tetherv1.ClusterEvent_Created{
			Created: &tetherv1.ClusterCreated{Tenant: m.GetTenant(), Uid: randomToken(16)}}})
		createdAt = append(createdAt, i)
	}
	createdSeqs := make([]uint64, len(created))
	for k := range created {
		createdSeqs[k] = r.cfg.Clusters.LastSeq(created[k].GetClusterId())
	}
	acks, err := r.appendAll(ctx, created, createdSeqs)
	if err != nil {
		return nil, err
	}
	for k, i := range createdAt {
		seqs[i] = acks[k]
	}

	tokens := make([]*tetherv1.BootstrapToken, len(want))
	issued := make([]*tetherv1.ClusterEvent, len(want))
	expires := r.cfg.Now().Add(r.cfg.BootstrapTTL)
	for i, m := range want {
		token := "tbt1." + randomToken(32)
		sum := sha256.Sum256([]byte(token))
		issued[i] = &tetherv1.ClusterEvent{ClusterId: m.GetId(), Actor: by, Kind: &tetherv1.ClusterEvent_BootstrapTokenIssued{
			BootstrapTokenIssued: &tetherv1.BootstrapTokenIssued{TokenSha256: sum[:], ExpiresUnix: expires.Unix()}}}
		tokens[i] = &tetherv1.BootstrapToken{Token: token, ExpiresUnix: expires.Unix(), AgentEndpoint: r.cfg.AgentEndpoint,
			IdentityRootKey: r.cfg.IdentityRoot, Tenant: m.GetTenant()}
	}
	if _, err := r.appendAll(ctx, issued, seqs); err != nil {
		return nil, err
	}
	out := &tetherv1.EnsureClustersResponse{Clusters: make([]*tetherv1.CreateClusterResponse, len(want))}
	for i, m := range want {
		cl, _ := r.cfg.Clusters.Get(m.GetId())
		out.Clusters[i] = &tetherv1.CreateClusterResponse{Cluster: toProto(cl), Bootstrap: tokens[i]}
	}
	return connect.NewResponse(out), nil
}

// appendAll writes evs, each expecting its cluster's latest event at
// seqs[i], all in flight at once, and returns their sequences once the
// projection holds them all. The first failure fails the call; what was
// written stays written, and a retry of the call finds it.
func (r *Registry) appendAll(ctx context.Context, evs []*tetherv1.ClusterEvent, seqs []uint64) ([]uint64, error) {
	futures := make([]jetstream.PubAckFuture, len(evs))
	for i, ev := range evs {
		subj, err := clusters.Subject(ev.GetClusterId())
		if err != nil {
			return nil, connect.NewError(connect.CodeInvalidArgument, err)
		}
		ev.TimeUnixNano = r.cfg.Now().UnixNano()
		b, err := proto.Marshal(ev)
		if err != nil {
			return nil, connect.NewError(connect.CodeInternal, err)
		}
		if futures[i], err = r.cfg.JS.PublishAsync(subj, b, jetstream.WithExpectLastSequencePerSubject(seqs[i])); err != nil {
			return nil, connect.NewError(connect.CodeUnavailable, fmt.Errorf("writing the events: %w", err))
		}
	}
	out := make([]uint64, len(evs))
	var last uint64
	var first error
	for i, f := range futures {
		select {
		case ack := <-f.Ok():
			out[i] = ack.Sequence
			last = max(last, ack.Sequence)
		case err := <-f.Err():
			var apiErr *jetstream.APIError
			switch {
			case first != nil:
			case errors.As(err, &apiErr) && apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence:
				first = connect.NewError(connect.CodeAborted, fmt.Errorf("cluster %q changed meanwhile; try again", evs[i].GetClusterId()))
			default:
				first = connect.NewError(connect.CodeUnavailable, fmt.Errorf("writing the events: %w", err))
			}
		case <-ctx.Done():
			return nil, connect.NewError(connect.CodeCanceled, ctx.Err())
		}
	}
	if first != nil {
		return nil, first
	}
	if last > 0 {
		if err := r.cfg.Clusters.WaitApplied(ctx, last); err != nil {
			return nil, connect.NewError(connect.CodeUnavailable, err)
		}
	}
	return out, nil
}
