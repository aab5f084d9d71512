package caddyiap

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"time"

	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

// DefaultCredentialsPath is where PostgreSQL credentials are served when
// postgres_credentials names no path.
const DefaultCredentialsPath = "/.iap/postgres/credentials"

// PostgresCredentials serves raw PostgreSQL credentials (Vault-style) for clients that cannot
// send a token as their password: `POST <path>` with the caller's token returns a login minted
// for the caller's roles, for direct use against the database. The policy's grants decide, not
// the handler's allow rules; a token whose roles grant nothing is refused with 403.
type PostgresCredentials struct {
	// Path served. Default `/.iap/postgres/credentials`.
	Path string `json:"path,omitempty"`

	// Host and port clients are told to connect to. Default: the policy's upstream.
	Host string `json:"host,omitempty"`
	Port int    `json:"port,omitempty"`

	// How logins are minted; the same shape as iap_postgres's policy.
	Postgres PostgresPolicy `json:"postgres"`
}

// credentialsResponse is the JSON a successful POST returns.
type credentialsResponse struct {
	Username     string    `json:"username"`
	Password     string    `json:"password"`
	ExpiresAt    time.Time `json:"expires_at"`
	Host         string    `json:"host"`
	Port         int       `json:"port"`
	DBName       string    `json:"dbname"`
	GrantedRoles []string  `json:"granted_roles"`
}

func (c *PostgresCredentials) validate() error {
	if c.Path != "" && c.Path[0] != '/' {
		return fmt.Errorf("path %q must start with /", c.Path)
	}
	if c.Port < 0 || c.Port > 65535 {
		return fmt.Errorf("port %d is out of range", c.Port)
	}
	return c.Postgres.validate()
}

// sslmode is what the psql command on the access page asks for: require when the gateway
// reaches the database over TLS, prefer otherwise (it still takes TLS where offered).
func (c *PostgresCredentials) sslmode() string {
	if up, err := c.Postgres.upstreamConfig(); err == nil && up.TLSConfig != nil {
		return "require"
	}
	return "prefer"
}

// connectAddress is where clients are sent: the configured host and port, else the upstream's.
func (c *PostgresCredentials) connectAddress() (string, int, error) {
	up, err := c.Postgres.upstreamConfig()
	if err != nil {
		return "", 0, err
	}
	return cmp.Or(c.Host, up.Host), cmp.Or(c.Port, int(up.Port)), nil
}

// serveCredentials answers a POST to the credentials path.
func (h *Handler) serveCredentials(w http.ResponseWriter, r *http.Request, token string) error {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return caddyhttp.Error(http.StatusMethodNotAllowed, errors.New("iap: credentials are issued to POST only"))
	}
	if h.pgGateway == nil {
		return caddyhttp.Error(http.StatusServiceUnavailable, errors.New("iap: postgres credentials are not provisioned"))
	}
	r.Body = http.MaxBytesReader(w, r.Body, 4096)
	if err := r.ParseForm(); err != nil {
		return caddyhttp.Error(http.StatusBadRequest, fmt.Errorf("iap: reading the form: %w", err))
	}
	c := h.PostgresCredentials
	dbname := r.Form.Get("dbname")
	if dbname == "" && len(c.Postgres.Databases) > 0 {
		dbname = c.Postgres.Databases[0]
	}
	if dbname == "" {
		return caddyhttp.Error(http.StatusBadRequest, errors.New("iap: say which database: dbname=<name>"))
	}
	if token == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="caddy-iap"`)
		return caddyhttp.Error(http.StatusUnauthorized, errors.New("iap: no token"))
	}

	l, err := h.pgGateway.login(token, "", dbname, false, false)
	if err != nil {
		return caddyhttp.Error(http.StatusInternalServerError, err)
	}
	fields := []zap.Field{
		zap.String("client", r.RemoteAddr), zap.String("database", dbname),
		zap.String("subject", l.Subject), zap.String("email", l.Email), zap.String("issuer", l.Issuer),
		zap.Strings("roles", l.Roles),
	}
	if !l.OK {
		status := http.StatusInternalServerError
		switch {
		case l.SQLState == "28P01":
			status = http.StatusUnauthorized
			w.Header().Set("WWW-Authenticate", `Bearer realm="caddy-iap", error="invalid_token"`)
		case l.SQLState == "28000":
			status = http.StatusForbidden
		case l.SQLState == "08006":
			status = http.StatusServiceUnavailable
		}
		h.logger.Info("postgres credentials refused", append(fields,
			zap.Int("status", status), zap.String("sqlstate", l.SQLState), zap.String("reason", l.Reason))...)
		return writeJSONStatus(w, status, map[string]string{"error": l.SQLState, "message": l.ClientMessage})
	}

	host, port, _ := c.connectAddress() // validated at Provision
	h.logger.Info("postgres credentials issued", append(fields,
		zap.String("db_role", l.Role), zap.Strings("granted", l.Granted), zap.String("credential", l.Outcome),
		zap.Time("credential_expires", l.ExpiresAt))...)
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Pragma", "no-cache")
	return writeJSONStatus(w, http.StatusOK, credentialsResponse{
		Username: l.Role, Password: l.Password, ExpiresAt: l.ExpiresAt.UTC(),
		Host: host, Port: port, DBName: dbname, GrantedRoles: l.Granted,
	})
}

func writeJSONStatus(w http.ResponseWriter, status int, v any) error {
	body, err := json.Marshal(v)
	if err != nil {
		return err
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Content-Length", strconv.Itoa(len(body)))
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_, err = w.Write(body)
	return err
}

// parsePostgresCredentials parses `postgres_credentials [<path>] { <policy> connect <host:port> }`.
func parsePostgresCredentials(d *caddyfile.Dispenser) (*PostgresCredentials, error) {
	tok := d.Token()
	c := new(PostgresCredentials)
	if d.NextArg() {
		c.Path = d.Val()
		if d.NextArg() {
			return nil, d.ArgErr()
		}
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if sub != "grant" {
			if seen[sub] {
				return nil, d.Errf("%s is set twice", sub)
			}
			seen[sub] = true
		}
		if sub == "connect" {
			var addr string
			if err := oneArg(d, &addr); err != nil {
				return nil, err
			}
			host, port, err := net.SplitHostPort(addr)
			n, perr := strconv.Atoi(port)
			if err != nil || perr != nil || host == "" {
				return nil, d.Errf("connect: want <host>:<port>, got %q", addr)
			}
			c.Host, c.Port = host, n
			continue
		}
		known, err := c.Postgres.unmarshalSubdirective(d)
		if !known {
			return nil, d.Errf("unknown postgres_credentials subdirective %q", sub)
		}
		if err != nil {
			return nil, err
		}
	}
	if err := c.validate(); err != nil {
		return nil, errAt(tok, "postgres_credentials: %v", err)
	}
	return c, nil
}

// validateCredentialGrants checks that every granted role is one a role rule can grant.
func (h *Handler) validateCredentialGrants() error {
	if h.PostgresCredentials == nil {
		return nil
	}
	if err := h.PostgresCredentials.validate(); err != nil {
		return fmt.Errorf("postgres_credentials: %w", err)
	}
	for role := range h.PostgresCredentials.Postgres.Grants {
		if !slices.ContainsFunc(h.Roles, func(r RoleRule) bool { return r.Role == role }) {
			return fmt.Errorf("postgres_credentials: grants: role %q is granted by no role rule", role)
		}
	}
	return nil
}
