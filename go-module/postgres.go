package caddyiap

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"regexp"
	"slices"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/mholt/caddy-l4/layer4"
	"go.uber.org/zap"

	"github.com/caddy-iap/caddy-iap/go-module/internal/pgfront"
)

func init() {
	caddy.RegisterModule(PostgresHandler{})
}

// Defaults of a PostgreSQL policy that the Go side applies itself. The Rust gateway applies
// the rest (rust/postgres/src/config.rs; docs/postgres.md).
const (
	defaultJanitorInterval = 30 * time.Second
	defaultStartupTimeout  = 30 * time.Second
)

// PostgresHandler is a caddy-l4 handler (`layer4.handlers.iap_postgres`) that lets PostgreSQL
// clients log in with an OIDC token as their password. Put it after caddy-l4's
// `postgres_tls` and `tls` handlers: a client that has not negotiated TLS is refused before
// it is asked for a password. The token is verified and its roles mapped by the Rust engine,
// which then provisions (or re-uses) a short-lived login role for that identity, member only
// of the group roles the policy grants to those roles. The handler logs in upstream as that
// role and relays the session, which ends when the token or the credential expires.
//
// Without a `postgres` policy the handler only forwards cancel requests and refuses logins:
// that is the form for the route that catches connections which did not ask for TLS.
type PostgresHandler struct {
	// Whose tokens count and which roles they carry (only with a policy).
	TokenIdentity

	// The database policy: where the database is, how logins are minted, what they grant.
	Postgres *PostgresPolicy `json:"postgres,omitempty"`

	logger  *zap.Logger
	front   *pgfront.Front
	gateway pgGateway
	janitor *janitor
}

// PostgresPolicy says how database logins are minted for verified identities.
type PostgresPolicy struct {
	// The admin connection the gateway provisions roles through, as a libpq connection
	// string or URL without a password. Its user needs CREATEROLE.
	Admin string `json:"admin,omitempty"`

	// Name of the environment variable holding the admin password.
	AdminPasswordEnv string `json:"admin_password_env,omitempty"`

	// File holding the admin password.
	AdminPasswordFile string `json:"admin_password_file,omitempty"`

	// PEM CA certificates verifying the admin connection's server (sslmode=verify-*).
	AdminCAFile string `json:"admin_ca_file,omitempty"`

	// Where clients' sessions log in, as a connection string without user, password or
	// database (they are the minted role's and the client's). Default: the admin connection's
	// host, port and TLS settings.
	Upstream string `json:"upstream,omitempty"`

	// caddy-iap role -> PostgreSQL group roles a login gets. A token whose roles map to no
	// group role is refused.
	Grants map[string][]string `json:"grants,omitempty"`

	// Databases clients may ask for; empty allows any.
	Databases []string `json:"databases,omitempty"`

	// Prefix of the login roles the gateway creates. Default `iap_`.
	RolePrefix string `json:"role_prefix,omitempty"`

	// The NOLOGIN role every managed login role is a member of; roles that are not members
	// are never touched. Default `caddy_iap_managed`.
	MarkerRole string `json:"marker_role,omitempty"`

	// How long a minted password is valid. Default 15m.
	TTL caddy.Duration `json:"ttl,omitempty"`

	// Longest life of one password (renewed logins extend it up to this), and of a session
	// with on_expiry continue. Default 8h.
	MaxTTL caddy.Duration `json:"max_ttl,omitempty"`

	// What happens to a session when its token or credential expires: `terminate`
	// (default) ends it; `continue` lets it run up to max_ttl.
	OnExpiry string `json:"on_expiry,omitempty"`

	// What the janitor does with expired roles: `deactivate` (default: NOLOGIN, grants
	// revoked) or `drop` (falls back to deactivate when the role owns objects).
	ExpiredRoles string `json:"expired_roles,omitempty"`

	// How often the janitor looks for expired roles. Default 30s.
	JanitorInterval caddy.Duration `json:"janitor_interval,omitempty"`
}

// gatewayConfig is the Rust gateway's policy (rust/postgres/src/config.rs). Unset values are
// omitted so the gateway applies its own defaults.
func (p *PostgresPolicy) gatewayConfig() map[string]any {
	c := map[string]any{
		"name":      "postgres",
		"admin_dsn": p.Admin,
		"grants":    p.Grants,
	}
	set := func(key, v string) {
		if v != "" {
			c[key] = v
		}
	}
	set("admin_password_env", p.AdminPasswordEnv)
	set("admin_password_file", p.AdminPasswordFile)
	set("admin_ca_file", p.AdminCAFile)
	set("role_prefix", p.RolePrefix)
	set("marker_role", p.MarkerRole)
	set("on_expiry", p.OnExpiry)
	set("expired_roles", p.ExpiredRoles)
	if len(p.Databases) > 0 {
		c["databases"] = p.Databases
	}
	if v := ceilUnit(p.TTL, time.Second); v != nil {
		c["ttl_secs"] = *v
	}
	if v := ceilUnit(p.MaxTTL, time.Second); v != nil {
		c["max_ttl_secs"] = *v
	}
	return c
}

// pgGateway is the Rust gateway as the handler uses it (internal/ffi.PgGateway).
type pgGateway interface {
	// login mints a database login for token; session marks it as a browser session's
	// ID token rather than a bearer token.
	login(token, user, database string, fresh, session bool) (pgLogin, error)
	sweep() (pgSweep, error)
}

// pgLogin and pgSweep mirror ffi.PgLogin and ffi.PgSweep, so this file builds without cgo.
type (
	pgLogin struct {
		OK                              bool
		SQLState, ClientMessage, Reason string
		Role, Password, Outcome         string
		ExpiresAt, Deadline             time.Time
		Granted                         []string
		Subject, Email, Issuer          string
		Roles                           []string
	}
	pgSweep struct {
		Deactivated, Dropped []string
		Terminated           int
		SkippedLocked        bool
		Err                  string
	}
)

// CaddyModule returns the Caddy module information.
func (PostgresHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "layer4.handlers.iap_postgres",
		New: func() caddy.Module { return new(PostgresHandler) },
	}
}

// The process's cancel keys: a CancelRequest arrives on a new connection, possibly through
// another route or a config that has been reloaded since.
var cancels = pgfront.NewCancelRegistry()

// Validate checks the config's shape without I/O.
func (h *PostgresHandler) Validate() error {
	if h.Postgres == nil {
		if len(h.Issuers) > 0 || len(h.Roles) > 0 {
			return errors.New("issuers and roles need a postgres policy (admin, grants)")
		}
		return nil
	}
	if err := h.TokenIdentity.validate(); err != nil {
		return err
	}
	if err := h.Postgres.validate(); err != nil {
		return fmt.Errorf("postgres: %w", err)
	}
	for role := range h.Postgres.Grants {
		if !h.grantsRole(role) {
			return fmt.Errorf("postgres: grants: role %q is granted by no role rule", role)
		}
	}
	return nil
}

// pgIdentifier is what the gateway accepts as a group role, prefix or marker name.
var pgIdentifier = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]{0,62}$`)

func (p *PostgresPolicy) validate() error {
	if p.Admin == "" {
		return errors.New("admin: the admin connection string is required")
	}
	if p.AdminPasswordEnv != "" && p.AdminPasswordFile != "" {
		return errors.New("admin: set admin_password_env or admin_password_file, not both")
	}
	if len(p.Grants) == 0 {
		return errors.New("grants: at least one `grant <role> <group role...>` is required")
	}
	for role, groups := range p.Grants {
		if len(groups) == 0 {
			return fmt.Errorf("grants: role %q grants no group role", role)
		}
		for _, g := range groups {
			if !pgIdentifier.MatchString(g) {
				return fmt.Errorf("grants: %q is not a plain PostgreSQL role name", g)
			}
		}
	}
	for _, n := range []struct{ field, v string }{{"role_prefix", p.RolePrefix}, {"marker_role", p.MarkerRole}} {
		if n.v != "" && !pgIdentifier.MatchString(n.v) {
			return fmt.Errorf("%s: %q is not a plain PostgreSQL role name", n.field, n.v)
		}
	}
	if p.TTL < 0 || p.MaxTTL < 0 || p.JanitorInterval < 0 {
		return errors.New("ttl, max_ttl and janitor_interval must not be negative")
	}
	if p.TTL != 0 && p.MaxTTL != 0 && p.TTL > p.MaxTTL {
		return fmt.Errorf("ttl %s is longer than max_ttl %s", time.Duration(p.TTL), time.Duration(p.MaxTTL))
	}
	if !slices.Contains([]string{"", "terminate", "continue"}, p.OnExpiry) {
		return fmt.Errorf("on_expiry: %q is not terminate or continue", p.OnExpiry)
	}
	if !slices.Contains([]string{"", "deactivate", "drop"}, p.ExpiredRoles) {
		return fmt.Errorf("expired_roles: %q is not deactivate or drop", p.ExpiredRoles)
	}
	_, err := p.upstreamConfig()
	return err
}

// upstreamConfig parses the connection string sessions log in with. A password in it is
// refused (logins use minted ones), and so is a connection that could fall back to plaintext
// or is not encrypted on its way to a host that is not this machine.
func (p *PostgresPolicy) upstreamConfig() (*pgconn.Config, error) {
	dsn := cmp.Or(p.Upstream, p.Admin)
	field := "upstream"
	if p.Upstream == "" {
		field = "admin"
	}
	cfg, err := pgconn.ParseConfigWithOptions(dsn, pgconn.ParseConfigOptions{
		ConnStringAllowedKeys: []string{
			"host", "port", "dbname", "user", "sslmode", "sslrootcert", "sslcert", "sslkey",
			"sslnegotiation", "sslsni", "connect_timeout", "application_name",
		},
	})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", field, err)
	}
	if len(cfg.Fallbacks) > 0 {
		return nil, fmt.Errorf("%s: set sslmode to disable (loopback only), require, verify-ca or verify-full; "+
			"a connection that may fall back to plaintext is refused", field)
	}
	if cfg.TLSConfig == nil && !loopbackHost(cfg.Host) {
		return nil, fmt.Errorf("%s: host %s is not on this machine: set sslmode to require, verify-ca or verify-full",
			field, cfg.Host)
	}
	cfg.Password = ""
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	return cfg, nil
}

// loopbackHost says whether host is a Unix socket directory or a loopback address.
func loopbackHost(host string) bool {
	if len(host) > 0 && host[0] == '/' {
		return true
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// Handle serves one PostgreSQL client connection until it ends.
func (h *PostgresHandler) Handle(cx *layer4.Connection, _ layer4.Handler) error {
	_, encrypted := cx.Conn.(*tls.Conn)
	remote := cx.RemoteAddr().String()
	// A session outlives a config reload; it ends at its own deadline or when a side closes.
	ctx := context.WithoutCancel(cx.Context)
	return h.front.Serve(ctx, cx, encrypted, pgfront.Hooks{
		LoggedIn: func(s *pgfront.Session, err error) { h.logLogin(s, remote, err) },
		Ended:    func(s *pgfront.Session) { h.logEnd(s, remote) },
	})
}

// authenticator adapts the Rust gateway to pgfront.
type authenticator struct{ gateway pgGateway }

func (a authenticator) Authenticate(_ context.Context, token string, s *pgfront.Session, fresh bool) (*pgfront.Login, error) {
	if a.gateway == nil {
		return nil, &pgfront.Refusal{SQLState: "28000", Message: "this caddy-iap route does not accept logins"}
	}
	l, err := a.gateway.login(token, s.Startup.User, s.Startup.Database, fresh, false)
	if err != nil {
		return nil, err
	}
	s.Identity = &l
	if !l.OK {
		return nil, &pgfront.Refusal{SQLState: l.SQLState, Message: l.ClientMessage}
	}
	return &pgfront.Login{Role: l.Role, Password: l.Password, Deadline: l.Deadline}, nil
}

// logLogin writes the audit line of one login: who, as which database role, with which
// grants, from where, and the result with its reason. Never the token or the password.
func (h *PostgresHandler) logLogin(s *pgfront.Session, remote string, err error) {
	fields := []zap.Field{
		zap.String("client", remote),
		zap.String("user", s.Startup.User),
		zap.String("database", s.Startup.Database),
		zap.String("application_name", s.Startup.Params["application_name"]),
	}
	if l, ok := s.Identity.(*pgLogin); ok {
		fields = append(fields,
			zap.String("subject", l.Subject), zap.String("email", l.Email), zap.String("issuer", l.Issuer),
			zap.Strings("roles", l.Roles))
		if l.OK {
			fields = append(fields, zap.String("db_role", l.Role), zap.Strings("granted", l.Granted),
				zap.String("credential", l.Outcome), zap.Time("credential_expires", l.ExpiresAt))
			if !l.Deadline.IsZero() {
				fields = append(fields, zap.Time("session_deadline", l.Deadline))
			}
		} else {
			fields = append(fields, zap.String("reason", l.Reason))
		}
	}
	switch {
	case err != nil:
		h.logger.Warn("postgres login failed", append(fields, zap.String("result", "error"), zap.Error(err))...)
	case s.Refusal != nil:
		h.logger.Info("postgres login refused", append(fields, zap.String("result", "refused"),
			zap.String("sqlstate", s.Refusal.SQLState), zap.String("message", s.Refusal.Message))...)
	default:
		h.logger.Info("postgres login", append(fields, zap.String("result", "allowed"))...)
	}
}

// logEnd writes the audit line of a session's end.
func (h *PostgresHandler) logEnd(s *pgfront.Session, remote string) {
	fields := []zap.Field{
		zap.String("client", remote),
		zap.Duration("duration", s.Ended.Sub(s.Started)),
		zap.Int64("bytes_in", s.BytesIn),
		zap.Int64("bytes_out", s.BytesOut),
		zap.String("end", s.EndReason),
	}
	if l, ok := s.Identity.(*pgLogin); ok {
		fields = append(fields, zap.String("subject", l.Subject), zap.String("db_role", l.Role))
	}
	h.logger.Info("postgres session ended", fields...)
}

// janitor sweeps a gateway's expired roles on a ticker until stopped.
type janitor struct {
	stop    context.CancelFunc
	stopped chan struct{}
}

// startJanitor sweeps once now and then every `every`, logging what it did.
func startJanitor(g pgGateway, logger *zap.Logger, every time.Duration) *janitor {
	ctx, stop := context.WithCancel(context.Background())
	j := &janitor{stop: stop, stopped: make(chan struct{})}
	go func() {
		defer close(j.stopped)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			sweepOnce(g, logger)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return j
}

// Stop ends the janitor and waits for a pass in progress. Nil is fine.
func (j *janitor) Stop() {
	if j != nil {
		j.stop()
		<-j.stopped
	}
}

func sweepOnce(g pgGateway, logger *zap.Logger) {
	r, err := g.sweep()
	switch {
	case err != nil:
		logger.Warn("postgres janitor", zap.Error(err))
	case r.Err != "":
		logger.Warn("postgres janitor", zap.String("error", r.Err))
	case len(r.Deactivated)+len(r.Dropped) > 0 || r.Terminated > 0:
		logger.Info("postgres janitor", zap.Strings("deactivated", r.Deactivated),
			zap.Strings("dropped", r.Dropped), zap.Int("sessions_terminated", r.Terminated))
	}
}

// Cleanup stops the janitor. The gateway itself is freed by the garbage collector once no
// connection holds this handler, since sessions of a retired config may still be logging in.
func (h *PostgresHandler) Cleanup() error {
	h.janitor.Stop()
	return nil
}

// Interface guards
var (
	_ caddy.Provisioner  = (*PostgresHandler)(nil)
	_ caddy.Validator    = (*PostgresHandler)(nil)
	_ caddy.CleanerUpper = (*PostgresHandler)(nil)
	_ layer4.NextHandler = (*PostgresHandler)(nil)
)
