// Package pgfront is the PostgreSQL wire-protocol front of caddy-iap: it greets a client,
// takes the password it sends as an OIDC token, has it exchanged for a minted database login,
// logs in upstream with that login (pgconn speaks SCRAM), and then relays bytes both ways.
//
// It decides nothing about identity: an Authenticator (the Rust engine, through cgo) does.
// It has no Caddy in it either, so it can be tested against a real PostgreSQL alone.
package pgfront

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
)

// Startup is what a client asked for in its StartupMessage.
type Startup struct {
	User     string
	Database string
	// Params are the other startup parameters (application_name, options, ...), forwarded
	// to the upstream as run-time parameters.
	Params map[string]string
}

// Login is a database login minted for one verified identity.
type Login struct {
	Role     string
	Password string
	// Deadline ends the relayed session; zero means the session may run until either side
	// closes it.
	Deadline time.Time
}

// Refusal is a login the Authenticator refused, with the PostgreSQL error the client gets.
// Message is sent to the client, so it never holds token bytes.
type Refusal struct {
	SQLState string
	Message  string
}

func (r *Refusal) Error() string { return r.SQLState + ": " + r.Message }

// Authenticator exchanges a client's token for a database login. fresh asks for a new
// password even when a still-valid one is cached (the upstream refused the cached one).
// It returns a *Refusal for a login the client should be told about; any other error is
// reported to the client as an internal error without detail.
type Authenticator interface {
	// It may record who the caller is in s.Identity, for the hooks.
	Authenticate(ctx context.Context, token string, s *Session, fresh bool) (*Login, error)
}

// Front serves PostgreSQL clients. Its fields are set once before Serve is first called.
type Front struct {
	// Upstream is the base config for logging in upstream: host, port and TLS. User,
	// password and database are replaced per login.
	Upstream *pgconn.Config
	Auth     Authenticator
	// Cancels routes CancelRequests to the upstream session they name; shared by every
	// Front in the process so a cancel arriving on any route finds its session.
	Cancels *CancelRegistry
	// StartupTimeout bounds the time from connect to a finished login (default 30s).
	StartupTimeout time.Duration
}

// Session is the record of one client connection, for the audit log.
type Session struct {
	Startup Startup
	Login   *Login // nil unless the login succeeded
	// Refusal is set when the client was refused (by the Authenticator or the upstream).
	Refusal *Refusal
	// Identity is whatever the Authenticator recorded about the caller (for the audit log).
	Identity any
	// Canceled is true for a connection that only carried a CancelRequest.
	Canceled bool
	Started  time.Time
	Ended    time.Time
	// BytesIn counts bytes relayed from the client, BytesOut bytes relayed to it.
	BytesIn, BytesOut int64
	// EndReason says why a relayed session ended: "client closed", "server closed",
	// "deadline" or "shutdown".
	EndReason string
}

// Hooks receive the two audit events of a session. Either may be nil.
type Hooks struct {
	// LoggedIn runs once the login is decided: s.Login or s.Refusal is set, or err says
	// what failed before a decision (a client that went away, a protocol error).
	LoggedIn func(s *Session, err error)
	// Ended runs when a relayed session is over.
	Ended func(s *Session)
}

// Frontend messages that open a connection.
const (
	maxPreambles = 2 // SSLRequest and GSSENCRequest answers before a StartupMessage
	// maxPasswordBody bounds the one message read before a login: the password message, whose
	// body is a token (at most 65536 bytes, the engine's largest max_token_bytes) and a NUL.
	// Without it a client could declare a 2 GiB body and have it allocated, unauthenticated.
	maxPasswordBody = 65536 + 1
)

// Serve handles one client connection until it ends. encrypted says whether the connection
// is TLS (terminated by Caddy before this front): without it, a client is refused before it is
// asked for a password, so a token never crosses the network in the clear. Serve closes conn.
func (f *Front) Serve(ctx context.Context, conn net.Conn, encrypted bool, hooks Hooks) error {
	defer conn.Close()
	s := &Session{Started: time.Now()}
	timeout := f.StartupTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	_ = conn.SetDeadline(s.Started.Add(timeout))

	backend := pgproto3.NewBackend(conn, conn)
	backend.SetMaxBodyLen(maxPasswordBody)
	upstream, err := f.login(ctx, backend, conn, encrypted, s)
	if hooks.LoggedIn != nil && !s.Canceled {
		hooks.LoggedIn(s, err)
	}
	if err != nil || upstream == nil {
		return err
	}
	_ = conn.SetDeadline(time.Time{})
	f.relay(ctx, conn, upstream, s)
	if hooks.Ended != nil {
		hooks.Ended(s)
	}
	return nil
}

// login runs the startup exchange. It returns the upstream connection, ready for the client's
// first query, or nil when the connection ended (refused, canceled, or broken).
func (f *Front) login(ctx context.Context, backend *pgproto3.Backend, conn net.Conn, encrypted bool, s *Session) (*upstreamConn, error) {
	var startup *pgproto3.StartupMessage
	for i := 0; startup == nil; i++ {
		msg, err := backend.ReceiveStartupMessage()
		if err != nil {
			return nil, fmt.Errorf("reading startup message: %w", err)
		}
		switch m := msg.(type) {
		case *pgproto3.CancelRequest:
			s.Canceled = true
			f.Cancels.Forward(ctx, m.ProcessID, m.SecretKey)
			return nil, nil
		case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest:
			// TLS is terminated by Caddy's `postgres_tls` and `tls` handlers before this one;
			// a request reaching us is declined, and a plaintext startup is then refused.
			if i >= maxPreambles || encrypted {
				return nil, f.refuse(backend, s, "08P01", "unexpected encryption request")
			}
			if _, err := conn.Write([]byte{'N'}); err != nil {
				return nil, err
			}
		case *pgproto3.StartupMessage:
			startup = m
		default:
			return nil, f.refuse(backend, s, "08P01", "unexpected startup message")
		}
	}
	s.Startup = startupOf(startup)
	if !encrypted {
		return nil, f.refuse(backend, s, "28000",
			"caddy-iap requires an encrypted connection: connect with sslmode=require")
	}
	if _, replication := startup.Parameters["replication"]; replication {
		return nil, f.refuse(backend, s, "28000", "replication connections are not supported by caddy-iap")
	}

	backend.Send(&pgproto3.AuthenticationCleartextPassword{})
	if err := backend.Flush(); err != nil {
		return nil, err
	}
	if err := backend.SetAuthType(pgproto3.AuthTypeCleartextPassword); err != nil {
		return nil, err
	}
	msg, err := backend.Receive()
	if err != nil {
		return nil, fmt.Errorf("reading password message: %w", err)
	}
	pw, ok := msg.(*pgproto3.PasswordMessage)
	if !ok {
		return nil, f.refuse(backend, s, "08P01", "expected a password message")
	}
	token := strings.TrimSpace(pw.Password)
	if token == "" {
		return nil, f.refuse(backend, s, "28P01", "no token: send your OIDC access token as the password")
	}

	up, err := f.connectUpstream(ctx, token, s)
	if err != nil {
		var r *Refusal
		if errors.As(err, &r) {
			return nil, f.refuse(backend, s, r.SQLState, r.Message)
		}
		return nil, errors.Join(err, f.refuse(backend, s, "XX000", "caddy-iap could not complete the login"))
	}
	if err := up.greet(backend, f.Cancels); err != nil {
		up.close()
		return nil, err
	}
	return up, nil
}

// connectUpstream gets a login for the token and logs in upstream with it. A cached password
// the upstream refuses (another gateway instance re-minted it) is replaced once.
func (f *Front) connectUpstream(ctx context.Context, token string, s *Session) (*upstreamConn, error) {
	for fresh := false; ; fresh = true {
		login, err := f.Auth.Authenticate(ctx, token, s, fresh)
		if err != nil {
			return nil, err
		}
		s.Login = login
		up, err := dialUpstream(ctx, f.Upstream, login, &s.Startup)
		if err == nil {
			return up, nil
		}
		s.Login = nil
		var pgErr *pgconn.PgError
		if errors.As(err, &pgErr) {
			if pgErr.Code == "28P01" && !fresh {
				continue
			}
			// The database's own refusal (no such database, too many connections) is the
			// client's business: pass its code and message on.
			return nil, &Refusal{SQLState: pgErr.Code, Message: pgErr.Message}
		}
		return nil, &Refusal{SQLState: "08006", Message: "caddy-iap could not reach the database"}
	}
}

// refuse sends a FATAL ErrorResponse and records the refusal. It returns nil: a refusal is
// an outcome, not an error of the front.
func (f *Front) refuse(backend *pgproto3.Backend, s *Session, code, message string) error {
	s.Refusal = &Refusal{SQLState: code, Message: message}
	backend.Send(&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: message})
	_ = backend.Flush()
	return nil
}

func startupOf(m *pgproto3.StartupMessage) Startup {
	s := Startup{Params: make(map[string]string, len(m.Parameters))}
	for k, v := range m.Parameters {
		switch {
		case k == "user":
			s.User = v
		case k == "database":
			s.Database = v
		case strings.HasPrefix(k, "_pq_."):
			// Protocol extensions are negotiated per hop; none are offered here.
		default:
			s.Params[k] = v
		}
	}
	if s.Database == "" {
		s.Database = s.User // libpq's rule
	}
	return s
}
