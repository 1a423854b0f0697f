// Package telemetry sets up what every Tether service reports through:
// structured logs (log/slog), a Prometheus registry of its own, and an
// OpenTelemetry tracer provider whose context crosses every hop.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

// Options configure Setup.
type Options struct {
	Service string
	Version string
	// LogLevel is debug, info, warn or error.
	LogLevel string
	// LogFormat is json or text.
	LogFormat string
	LogOutput io.Writer
	// OTLPEndpoint, when set (host:port or a URL), exports traces over
	// OTLP/HTTP. Empty keeps traces in-process: ids still flow through logs
	// and every hop, nothing leaves the machine.
	OTLPEndpoint string
}

// Telemetry is one service's logger, metrics registry and tracing.
type Telemetry struct {
	Logger     *slog.Logger
	Registry   *prometheus.Registry
	Tracer     trace.Tracer
	Propagator propagation.TextMapPropagator
	provider   *sdktrace.TracerProvider
}

// Setup builds the service's telemetry. Call Shutdown before exit to flush
// spans.
func Setup(ctx context.Context, o Options) (*Telemetry, error) {
	if o.Service == "" {
		return nil, errors.New("telemetry: service name is required")
	}
	if o.LogOutput == nil {
		return nil, errors.New("telemetry: log output is required")
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(orDefault(o.LogLevel, "info"))); err != nil {
		return nil, fmt.Errorf("telemetry: log level: %w", err)
	}
	hopts := &slog.HandlerOptions{Level: level}
	var h slog.Handler
	switch strings.ToLower(orDefault(o.LogFormat, "json")) {
	case "json":
		h = slog.NewJSONHandler(o.LogOutput, hopts)
	case "text":
		h = slog.NewTextHandler(o.LogOutput, hopts)
	default:
		return nil, fmt.Errorf("telemetry: log format %q is neither json nor text", o.LogFormat)
	}
	logger := slog.New(h).With("service", o.Service)

	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))

	res, err := resource.New(ctx, resource.WithAttributes(semconv.ServiceName(o.Service), semconv.ServiceVersion(orDefault(o.Version, "dev"))))
	if err != nil {
		return nil, fmt.Errorf("telemetry: resource: %w", err)
	}
	// Without an exporter nothing would read a recorded span: spans still
	// get ids (for logs, and to pass on), but record nothing.
	sampler := sdktrace.NeverSample()
	if o.OTLPEndpoint != "" {
		sampler = sdktrace.ParentBased(sdktrace.AlwaysSample())
	}
	popts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithSampler(sampler)}
	if o.OTLPEndpoint != "" {
		var eopts []otlptracehttp.Option
		if strings.Contains(o.OTLPEndpoint, "://") {
			eopts = append(eopts, otlptracehttp.WithEndpointURL(o.OTLPEndpoint))
		} else {
			eopts = append(eopts, otlptracehttp.WithEndpoint(o.OTLPEndpoint), otlptracehttp.WithInsecure())
		}
		exp, err := otlptracehttp.New(ctx, eopts...)
		if err != nil {
			return nil, fmt.Errorf("telemetry: OTLP exporter for %s: %w", o.OTLPEndpoint, err)
		}
		popts = append(popts, sdktrace.WithBatcher(exp))
	}
	tp := sdktrace.NewTracerProvider(popts...)
	return &Telemetry{
		Logger:     logger,
		Registry:   reg,
		Tracer:     tp.Tracer("github.com/tether-dev/tether/" + o.Service),
		Propagator: propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{}),
		provider:   tp,
	}, nil
}

// Shutdown flushes and stops tracing.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	return t.provider.Shutdown(ctx)
}

// LogWith returns a logger that adds the trace id of ctx's span, so logs and
// traces of one request join up.
func LogWith(ctx context.Context, l *slog.Logger) *slog.Logger {
	if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
		return l.With("trace_id", sc.TraceID().String())
	}
	return l
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}

// Instruments is what a component reports through; service configs embed
// it instead of listing the four each.
type Instruments struct {
	Logger     *slog.Logger
	Registerer prometheus.Registerer
	Tracer     trace.Tracer
	Propagator propagation.TextMapPropagator
}

// Validate reports a missing instrument.
func (i Instruments) Validate() error {
	if i.Logger == nil || i.Registerer == nil || i.Tracer == nil || i.Propagator == nil {
		return errors.New("logger, registerer, tracer and propagator are required")
	}
	return nil
}

// Instruments returns t's logger, registry, tracer and propagator.
func (t *Telemetry) Instruments() Instruments {
	return Instruments{Logger: t.Logger, Registerer: t.Registry, Tracer: t.Tracer, Propagator: t.Propagator}
}

// HopDuration is tether_request_duration_seconds: each hop's time to the
// response head, labelled by hop. It is registered once per registry and
// shared after that, so a gateway that runs its router in its own process
// (ADR 018) reports both hops in one series set.
func HopDuration(reg prometheus.Registerer) (*prometheus.HistogramVec, error) {
	h := prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "tether_request_duration_seconds", Help: "Time to the response head at this hop.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	}, []string{"hop"})
	if err := reg.Register(h); err != nil {
		var are prometheus.AlreadyRegisteredError
		if errors.As(err, &are) {
			if existing, ok := are.ExistingCollector.(*prometheus.HistogramVec); ok {
				return existing, nil
			}
		}
		return nil, fmt.Errorf("registering tether_request_duration_seconds: %w", err)
	}
	return h, nil
}
