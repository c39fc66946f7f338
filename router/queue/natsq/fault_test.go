package natsq

import (
	"bufio"
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/hookrouter/hookrouter/router/queue"
)

// ownNats is a nats-server with JetStream that the test started itself, on
// a free port and a store dir of its own, so that it can pause (SIGSTOP),
// kill and restart it without touching the machine's server on 4222.
type ownNats struct {
	t    *testing.T
	bin  string
	args []string
	addr string
	cmd  *exec.Cmd
}

func startOwnNats(t *testing.T) *ownNats {
	t.Helper()
	bin, err := exec.LookPath("nats-server")
	if err != nil {
		bin = "/usr/sbin/nats-server"
		if _, err := os.Stat(bin); err != nil {
			t.Skip("nats-server not installed")
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	s := &ownNats{t: t, bin: bin, addr: addr,
		args: []string{"-a", "127.0.0.1", "-p", port, "-js", "-sd", filepath.Join(t.TempDir(), "js")}}
	s.start()
	t.Cleanup(s.kill)
	return s
}

func (s *ownNats) url() string { return "nats://" + s.addr }

func (s *ownNats) start() {
	s.t.Helper()
	s.cmd = exec.Command(s.bin, s.args...)
	out, err := s.cmd.StdoutPipe()
	if err != nil {
		s.t.Fatal(err)
	}
	s.cmd.Stderr = s.cmd.Stdout
	if err := s.cmd.Start(); err != nil {
		s.t.Fatalf("start nats-server: %v", err)
	}
	ready := make(chan struct{})
	go func() {
		var once sync.Once
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			// Listening is not enough: JetStream must have recovered its
			// streams before a client's API calls get an answer.
			if strings.Contains(sc.Text(), "Server is ready") {
				once.Do(func() { close(ready) })
			}
		}
	}()
	select {
	case <-ready:
	case <-time.After(20 * time.Second):
		s.t.Fatalf("nats-server on %s not ready within 20s", s.addr)
	}
}

// kill kills the server (SIGKILL, after SIGCONT: a paused process cannot
// die) and waits for it.
func (s *ownNats) kill() {
	if s.cmd == nil || s.cmd.ProcessState != nil {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGCONT)
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
}

func (s *ownNats) signal(sig syscall.Signal) {
	s.t.Helper()
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatalf("signal %v: %v", sig, err)
	}
}

// restart kills the server and starts it again on the same port and store.
func (s *ownNats) restart() {
	s.t.Helper()
	s.kill()
	s.start()
}

// openOn opens a Queue on srv's server with a stream of its own.
func openOn(t *testing.T, srv *ownNats, opts ...Option) *Queue {
	t.Helper()
	var log *slog.Logger
	if testing.Verbose() {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	q, err := Open(srv.url(), log, append([]Option{WithStream("FAULT", "fault")}, opts...)...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { q.Close() })
	return q
}

// streamMsgs is what the stream holds, asked over a connection of its own.
func streamMsgs(t *testing.T, srv *ownNats) (map[string]uint64, error) {
	t.Helper()
	nc, err := nats.Connect(srv.url())
	if err != nil {
		return nil, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	s, err := js.Stream(ctx, "FAULT")
	if err != nil {
		return nil, err
	}
	info, err := s.Info(ctx, jetstream.WithSubjectFilter("fault.>"))
	if err != nil {
		return nil, err
	}
	if testing.Verbose() {
		t.Logf("stream state %+v", info.State)
		for _, c := range []string{"crm", "archive"} {
			if ci, err := js.Consumer(ctx, "FAULT", ConsumerPrefix+c); err == nil {
				t.Logf("consumer %s: delivered %+v ack floor %+v pending %d ack pending %d redelivered %d waiting %d", c,
					ci.CachedInfo().Delivered, ci.CachedInfo().AckFloor, ci.CachedInfo().NumPending, ci.CachedInfo().NumAckPending, ci.CachedInfo().NumRedelivered, ci.CachedInfo().NumWaiting)
			}
		}
	}
	return info.State.Subjects, nil
}

func TestDefaultAckWaitIsShort(t *testing.T) {
	// The takeover time after an instance dies: the bound is 30 s
	// for all of it, breaker and backoff included.
	if DefaultAckWait > 15*time.Second || DefaultAckWait < 5*time.Second {
		t.Fatalf("DefaultAckWait %v, want 5–15 s", DefaultAckWait)
	}
	srv := startOwnNats(t)
	q := openOn(t, srv)
	if err := q.Put(t.Context(), event(`{}`), []string{"crm"}); err != nil {
		t.Fatal(err)
	}
	d := take(t, q, "crm", 5*time.Second)
	info, err := q.lanes["crm"].cons.Info(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.AckWait != DefaultAckWait {
		t.Fatalf("consumer AckWait %v, want %v", info.Config.AckWait, DefaultAckWait)
	}
	if err := q.Done(d); err != nil {
		t.Fatal(err)
	}
}

// TestNATSRestart: deliveries accepted just before the server is killed
// and restarted, some of them being sent at that moment, are all delivered
// within seconds of its return, with the default AckWait; a held delivery
// stays this instance's across the restart (kept in progress, acked once
// the server is back) and is not handed out again.
func TestNATSRestart(t *testing.T) {
	srv := startOwnNats(t)
	q := openOn(t, srv)
	want := map[string]bool{}
	for range 20 {
		ev := event(`{"event":"channel.message_in"}`)
		want[ev.ID] = true
		if err := q.Put(t.Context(), ev, []string{"crm"}); err != nil {
			t.Fatal(err)
		}
	}
	var held []*queue.Delivery
	for range 5 {
		held = append(held, take(t, q, "crm", 5*time.Second))
	}
	// A pull left open, as an idle worker's is: the restart cuts it.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	got := make(chan *queue.Delivery, 100)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	takeAll := func() {
		wg.Go(func() {
			for {
				d, err := q.Take(ctx, "crm")
				if err != nil {
					return
				}
				got <- d
				for {
					if err := q.Done(d); err == nil || ctx.Err() != nil {
						break
					}
					time.Sleep(100 * time.Millisecond)
				}
			}
		})
	}
	srv.restart()
	back := time.Now()
	for _, d := range held {
		// The instance finished sending while the server was away: its
		// ack goes through once the client has reconnected.
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := q.Done(d)
			if err == nil {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("Done of a delivery held across the restart: %v", err)
			}
			time.Sleep(100 * time.Millisecond)
		}
		delete(want, d.Event.ID)
	}
	for range 4 {
		takeAll()
	}
	timeout := time.After(DefaultAckWait + 5*time.Second)
	for len(want) > 0 {
		select {
		case d := <-got:
			if !want[d.Event.ID] {
				t.Fatalf("delivery %s handed out twice", d.Event.ID)
			}
			delete(want, d.Event.ID)
		case <-timeout:
			t.Fatalf("%d deliveries still owed %v after the server came back", len(want), time.Since(back))
		}
	}
	t.Logf("all delivered %v after the server came back", time.Since(back).Round(time.Millisecond))
	// Nothing comes back: every one is acked.
	select {
	case d := <-got:
		t.Fatalf("delivery %s handed out again", d.Event.ID)
	case <-time.After(DefaultAckWait + 2*time.Second):
	}
}

// TestFailedPutLeavesNothing: a Put that fails because the server stalls
// (SIGSTOP: the publishes wait in its socket, and it stores them when it
// resumes, long after Put gave up) or dies leaves no delivery that is later
// handed out.
func TestFailedPutLeavesNothing(t *testing.T) {
	for _, tc := range []struct {
		name  string
		fault func(srv *ownNats)
		heal  func(srv *ownNats)
	}{
		{"paused", func(srv *ownNats) { srv.signal(syscall.SIGSTOP) }, func(srv *ownNats) { srv.signal(syscall.SIGCONT) }},
		{"restarted", func(srv *ownNats) { srv.kill() }, func(srv *ownNats) { srv.start() }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startOwnNats(t)
			q := openOn(t, srv, WithPutTimeout(time.Second))
			// A second instance's puller waits for work, as idle workers do.
			other := openOn(t, srv)
			ctx, cancel := context.WithCancel(t.Context())
			var wg sync.WaitGroup
			var mu sync.Mutex
			var taken []string
			for _, qq := range []*Queue{q, other} {
				for _, sink := range []string{"crm", "archive"} {
					wg.Go(func() {
						for {
							d, err := qq.Take(ctx, sink)
							if err != nil {
								return
							}
							mu.Lock()
							taken = append(taken, sink+"/"+d.Event.ID)
							mu.Unlock()
							_ = qq.Done(d)
						}
					})
				}
			}
			defer func() { cancel(); wg.Wait() }()

			// Senders put without pause; the fault strikes mid-stream, so
			// that some publishes are in the server's socket or store
			// when it stalls or dies.
			var (
				amu      sync.Mutex
				accepted = map[string]bool{}
				refused  = map[string]bool{}
				stop     = make(chan struct{})
				puts     sync.WaitGroup
			)
			for range 8 {
				puts.Go(func() {
					for {
						select {
						case <-stop:
							return
						default:
						}
						ev := event(`{}`)
						err := q.Put(t.Context(), ev, []string{"crm", "archive"})
						amu.Lock()
						if err != nil {
							refused[ev.ID] = true
						} else {
							accepted[ev.ID] = true
						}
						amu.Unlock()
						if err != nil {
							time.Sleep(50 * time.Millisecond) // a sender's back-off
						}
					}
				})
			}
			time.Sleep(300 * time.Millisecond)
			tc.fault(srv)
			time.Sleep(2500 * time.Millisecond)
			tc.heal(srv)
			time.Sleep(500 * time.Millisecond)
			close(stop)
			puts.Wait()
			if len(refused) == 0 {
				t.Fatal("no Put failed while the server was away")
			}
			// Events answered 200 are delivered; the others never are.
			missing := func() (n int) {
				mu.Lock()
				defer mu.Unlock()
				got := map[string]bool{}
				for _, k := range taken {
					got[k] = true
				}
				for id := range accepted {
					for _, sink := range []string{"crm", "archive"} {
						if !got[sink+"/"+id] {
							n++
						}
					}
				}
				return n
			}
			deadline := time.Now().Add(30 * time.Second)
			for missing() > 0 || q.wdCount.Load() > 0 {
				if time.Now().After(deadline) {
					t.Fatalf("%d deliveries of accepted events not taken, %d withdrawals left", missing(), q.wdCount.Load())
				}
				time.Sleep(50 * time.Millisecond)
			}
			// A stale delivery held for a recheck is given time to show up.
			time.Sleep(staleGrace + time.Second)
			mu.Lock()
			perEvent := map[string]int{}
			for _, k := range taken {
				_, id, _ := strings.Cut(k, "/")
				perEvent[id]++
			}
			late := 0
			for id := range refused {
				if perEvent[id] > 0 {
					late++
				}
			}
			if late > 0 {
				t.Errorf("%d events whose Put failed (503) were handed out", late)
			}
			twice := 0
			for id := range accepted {
				if perEvent[id] > 2 {
					twice++
				}
			}
			t.Logf("%d puts failed, %d accepted, %d deliveries taken", len(refused), len(accepted), len(taken))
			mu.Unlock()
			subjects, err := streamMsgs(t, srv)
			t.Logf("stream holds %v (%v); %d accepted events handed out more than once per sink", subjects, err, twice)
			// What a crashed server brought back behind the consumers' ack
			// floors is not owed: depth and age say nothing is, once the
			// deliveries whose acks it lost have come back (after AckWait)
			// and been acked.
			deadline = time.Now().Add(DefaultAckWait + 10*time.Second)
			for {
				_, crm := q.Oldest("crm")
				_, archive := q.Oldest("archive")
				if q.Depth("crm") == 0 && q.Depth("archive") == 0 && !crm && !archive && len(q.Pending()) == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("depth %d/%d, oldest %v/%v, pending %v; want nothing owed", q.Depth("crm"), q.Depth("archive"), crm, archive, q.Pending())
				}
				time.Sleep(50 * time.Millisecond)
			}
		})
	}
}

// TestReplaySameEventID: a second Put of an event with the same id (a
// dead letter replayed within JetStream's 2-minute duplicate window) is
// queued, not dropped as a duplicate of the first.
func TestReplaySameEventID(t *testing.T) {
	t.Parallel()
	ts := newStream(t)
	q := ts.open(t)
	ev := event(`{}`)
	for i := range 2 {
		if err := q.Put(t.Context(), ev, []string{"crm"}); err != nil {
			t.Fatal(err)
		}
		d := take(t, q, "crm", 5*time.Second)
		if d.Event.ID != ev.ID {
			t.Fatalf("put %d: took %s", i, d.Event.ID)
		}
		if err := q.Done(d); err != nil {
			t.Fatal(err)
		}
	}
}

var _ = errors.Is

// withKeepAlive sets the period of the in-progress marks.
func withKeepAlive(d time.Duration) Option { return func(o *options) { o.keepAlive = d } }

// TestLateMarkNoSecondCopy: when an in-progress mark comes too late (a
// loaded machine) and JetStream hands a delivery this instance is still
// sending out again, the copy is not delivered a second time by this
// instance, before or just after the first is done; the first's ack
// settles it.
func TestLateMarkNoSecondCopy(t *testing.T) {
	t.Parallel()
	ts := newStream(t)
	const ackWait = 500 * time.Millisecond
	q := ts.open(t, WithAckWait(ackWait), withKeepAlive(time.Hour))
	ev := event(`{}`)
	if err := q.Put(t.Context(), ev, []string{"crm"}); err != nil {
		t.Fatal(err)
	}
	d := take(t, q, "crm", 5*time.Second)
	// No mark: the server redelivers it after AckWait, to this instance.
	nothing(t, q, "crm", 4*ackWait)
	if err := q.Done(d); err != nil {
		t.Fatal(err)
	}
	nothing(t, q, "crm", 4*ackWait)
	eventually(t, "the stream to be empty", func() bool { return ts.msgs(t) == 0 })
}
