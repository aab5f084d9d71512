package pgfront

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// upstreamConn is a logged-in upstream session, taken over from pgconn.
type upstreamConn struct {
	hijacked *pgconn.HijackedConn
	// canceler is a PgConn rebuilt from the hijacked state, used only for CancelRequest
	// (which dials a new connection and never touches this one's socket).
	canceler  *pgconn.PgConn
	cancelKey cancelKey
}

// dialUpstream logs in as the minted role. pgconn does the SCRAM exchange; the password lives
// only in this call's copy of the config.
func dialUpstream(ctx context.Context, base *pgconn.Config, login *Login, s *Startup) (*upstreamConn, error) {
	cfg := base.Copy()
	cfg.User = login.Role
	cfg.Password = login.Password
	cfg.Database = s.Database
	for k, v := range s.Params {
		cfg.RuntimeParams[k] = v
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	cfg.Password = ""
	if err != nil {
		return nil, err
	}
	if err := conn.SyncConn(ctx); err != nil {
		conn.Close(ctx)
		return nil, err
	}
	hc, err := conn.Hijack()
	if err != nil {
		conn.Close(ctx)
		return nil, err
	}
	hc.Config.Password = ""
	canceler, err := pgconn.Construct(hc)
	if err != nil {
		hc.Conn.Close()
		return nil, err
	}
	return &upstreamConn{hijacked: hc, canceler: canceler}, nil
}

// greet finishes the client's startup as if it had logged in to the server itself: the
// server's parameters, a cancel key of our own (mapped to the server's), ReadyForQuery.
func (u *upstreamConn) greet(backend *pgproto3.Backend, cancels *CancelRegistry) error {
	backend.Send(&pgproto3.AuthenticationOk{})
	for name, value := range u.hijacked.ParameterStatuses {
		backend.Send(&pgproto3.ParameterStatus{Name: name, Value: value})
	}
	u.cancelKey = cancels.add(u.canceler)
	backend.Send(&pgproto3.BackendKeyData{ProcessID: u.cancelKey.pid, SecretKey: u.cancelKey.secret[:]})
	backend.Send(&pgproto3.ReadyForQuery{TxStatus: u.hijacked.TxStatus})
	return backend.Flush()
}

func (u *upstreamConn) close() {
	_ = u.hijacked.Conn.Close()
}

// relay copies bytes both ways until either side closes, the deadline passes or ctx ends.
func (f *Front) relay(ctx context.Context, client net.Conn, up *upstreamConn, s *Session) {
	defer f.Cancels.remove(up.cancelKey)
	server := up.hijacked.Conn

	var once sync.Once
	end := func(reason string) {
		once.Do(func() {
			s.EndReason = reason
			_ = client.Close()
			_ = server.Close()
		})
	}
	if s.Login != nil && !s.Login.Deadline.IsZero() {
		t := time.AfterFunc(time.Until(s.Login.Deadline), func() { end("deadline") })
		defer t.Stop()
	}
	stop := context.AfterFunc(ctx, func() { end("shutdown") })
	defer stop()

	// A server closes its side as soon as it reads the client's Terminate; which EOF we see
	// first is then a race, so the Terminate itself marks the end as the client's.
	toServer := &terminateWatcher{Writer: server}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		n, _ := io.Copy(toServer, client)
		s.BytesIn = n
		end("client closed")
	}()
	n, _ := io.Copy(client, server)
	s.BytesOut = n
	if toServer.sawTerminate.Load() {
		end("client closed")
	}
	end("server closed")
	wg.Wait()
	s.Ended = time.Now()
}

// terminateMessage is the frontend's Terminate ('X', length 4): the client ending its session.
var terminateMessage = [5]byte{'X', 0, 0, 0, 4}

// terminateWatcher passes writes through and notes when the stream ends with a Terminate
// message. It keeps the last five bytes, so a message split across writes counts.
type terminateWatcher struct {
	io.Writer
	tail         [5]byte
	sawTerminate atomic.Bool
}

func (w *terminateWatcher) Write(p []byte) (int, error) {
	// Noted before writing: the server may close, and the relay see it, before Write returns.
	if len(p) >= len(w.tail) {
		copy(w.tail[:], p[len(p)-len(w.tail):])
	} else {
		copy(w.tail[:], w.tail[len(p):])
		copy(w.tail[len(w.tail)-len(p):], p)
	}
	w.sawTerminate.Store(w.tail == terminateMessage)
	return w.Writer.Write(p)
}

// cancelKey is the (pid, secret) pair a client is given in BackendKeyData. It is ours, not
// the server's: the server's key never leaves the gateway.
type cancelKey struct {
	pid    uint32
	secret [4]byte
}

// CancelRegistry maps the cancel keys given to clients to their upstream sessions. One per
// process: a CancelRequest arrives on a new connection, possibly through another route.
type CancelRegistry struct {
	mu       sync.Mutex
	sessions map[cancelKey]*pgconn.PgConn
}

// NewCancelRegistry returns an empty registry.
func NewCancelRegistry() *CancelRegistry {
	return &CancelRegistry{sessions: make(map[cancelKey]*pgconn.PgConn)}
}

func (r *CancelRegistry) add(c *pgconn.PgConn) cancelKey {
	r.mu.Lock()
	defer r.mu.Unlock()
	for {
		var b [8]byte
		_, _ = rand.Read(b[:])
		k := cancelKey{pid: binary.BigEndian.Uint32(b[:4]) & 0x7fffffff}
		copy(k.secret[:], b[4:])
		if _, taken := r.sessions[k]; !taken && k.pid != 0 {
			r.sessions[k] = c
			return k
		}
	}
}

func (r *CancelRegistry) remove(k cancelKey) {
	r.mu.Lock()
	delete(r.sessions, k)
	r.mu.Unlock()
}

// Len is the number of sessions that can be canceled.
func (r *CancelRegistry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.sessions)
}

// Forward sends a cancel for the session a client's key names to its server. An unknown key
// is ignored, as PostgreSQL does: the client learns nothing either way.
func (r *CancelRegistry) Forward(ctx context.Context, pid uint32, secret []byte) {
	if len(secret) != 4 {
		return
	}
	k := cancelKey{pid: pid}
	copy(k.secret[:], secret)
	r.mu.Lock()
	c := r.sessions[k]
	r.mu.Unlock()
	if c == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	_ = c.CancelRequest(ctx)
}
