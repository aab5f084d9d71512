package caddyiap

import (
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"
	"github.com/caddyserver/caddy/v2/caddyconfig/httpcaddyfile"
	"github.com/caddyserver/caddy/v2/modules/caddyhttp"
	"go.uber.org/zap"
)

func init() {
	caddy.RegisterModule(CosmosHandler{})
	httpcaddyfile.RegisterHandlerDirective("iap_cosmos", parseCosmosCaddyfile)
	httpcaddyfile.RegisterDirectiveOrder("iap_cosmos", httpcaddyfile.Before, "reverse_proxy")
}

// Largest POST body the Cosmos gateway reads to classify a request (Cosmos DB's item limit is
// 2 MB; a batch holds up to 100 operations on items of up to 2 MB in total).
const maxCosmosBody = 4 << 20

// CosmosHandler (`http.handlers.iap_cosmos`) puts Azure Cosmos DB behind OIDC identities:
// clients point the stock Cosmos SDK at this site and give it an OIDC token instead of the
// account key. Each request's token is verified and its roles mapped by the Rust engine; the
// REST request is parsed into a Cosmos operation and resource; the roles' grants (in Cosmos's
// own data-action vocabulary) are checked; and an allowed request is re-signed for the real
// account (master key, or the gateway's own Entra ID token) with a fresh `x-ms-date` before the
// next handler (`reverse_proxy` to the account) sends it on. The account key exists only in
// the gateway's environment.
//
// Refusals are Cosmos-shaped JSON errors (`{"code":"Forbidden","message":...}`) with 400, 401,
// 403 or 503. The account document (`GET /`) is rewritten so SDKs with endpoint discovery on
// keep talking to the gateway.
type CosmosHandler struct {
	// Whose tokens count and which roles they carry.
	TokenIdentity

	// What each role may do where.
	Grants []CosmosGrant `json:"grants,omitempty"`

	// Environment variable holding the base64 account key.
	AccountKeyEnv string `json:"account_key_env,omitempty"`

	// File holding the base64 account key.
	AccountKeyFile string `json:"account_key_file,omitempty"`

	// Sign with the gateway's own Entra ID token instead of a key.
	Entra *CosmosEntra `json:"entra,omitempty"`

	// Log every allowed request at info level (denials always are); default is debug.
	Audit bool `json:"audit,omitempty"`

	logger  *zap.Logger
	gateway cosmosGateway
}

// CosmosGrant gives a role data actions on resource scopes.
type CosmosGrant struct {
	// The caddy-iap role.
	Role string `json:"role"`
	// Cosmos DB data actions: `readMetadata`, `items/read`, `items/create`, `items/replace`,
	// `items/upsert`, `items/delete`, `executeQuery`, `readChangeFeed`,
	// `executeStoredProcedure`, `manageConflicts`, `items/*`, `*`, their full
	// `Microsoft.DocumentDB/...` names, or the built-in sets `data_reader` and
	// `data_contributor`.
	Actions []string `json:"actions"`
	// `/` (the account), `dbs/<db>`, `dbs/<db>/colls/<container>`; `*` for any name.
	Scopes []string `json:"scopes"`
}

// CosmosEntra is the gateway's own Entra ID identity: client credentials (token_url,
// client_id, a secret by env or file) or a managed identity.
type CosmosEntra struct {
	TokenURL         string `json:"token_url,omitempty"`
	ClientID         string `json:"client_id,omitempty"`
	ClientSecretEnv  string `json:"client_secret_env,omitempty"`
	ClientSecretFile string `json:"client_secret_file,omitempty"`
	// Default `https://cosmos.azure.com/.default`.
	Scope string `json:"scope,omitempty"`
	// Use a managed identity at this endpoint ("" with ManagedIdentity set: Azure IMDS).
	ManagedIdentity *string `json:"managed_identity,omitempty"`
	// Managed identity resource; default `https://cosmos.azure.com`.
	Resource string `json:"resource,omitempty"`
	// Refresh the token this long before it expires (default 5m).
	RefreshBefore caddy.Duration `json:"refresh_before,omitempty"`
	// Give up on a token request after this long (default 10s).
	Timeout caddy.Duration `json:"timeout,omitempty"`
}

// CaddyModule returns the Caddy module information.
func (CosmosHandler) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "http.handlers.iap_cosmos",
		New: func() caddy.Module { return new(CosmosHandler) },
	}
}

// Validate checks what can be checked without reading secrets; the Rust gateway checks the
// grants' action names and scopes, and reads the key, at Provision.
func (h *CosmosHandler) Validate() error {
	if err := h.TokenIdentity.validate(); err != nil {
		return err
	}
	if len(h.Grants) == 0 {
		return errors.New("grants: at least one grant is required")
	}
	for _, g := range h.Grants {
		if !h.grantsRole(g.Role) {
			return fmt.Errorf("grants: role %q is granted by no role rule", g.Role)
		}
	}
	keys := 0
	for _, set := range []bool{h.AccountKeyEnv != "", h.AccountKeyFile != "", h.Entra != nil} {
		if set {
			keys++
		}
	}
	if keys != 1 {
		return errors.New("set exactly one of account_key_env, account_key_file and entra")
	}
	return nil
}

// gatewayConfig is the Rust gateway's JSON config (rust/cosmos/src/config.rs).
func (h *CosmosHandler) gatewayConfig() map[string]any {
	cfg := map[string]any{"grants": h.Grants}
	if h.AccountKeyEnv != "" {
		cfg["account_key_env"] = h.AccountKeyEnv
	}
	if h.AccountKeyFile != "" {
		cfg["account_key_file"] = h.AccountKeyFile
	}
	if e := h.Entra; e != nil {
		entra := map[string]any{}
		for k, v := range map[string]string{
			"token_url": e.TokenURL, "client_id": e.ClientID, "client_secret_env": e.ClientSecretEnv,
			"client_secret_file": e.ClientSecretFile, "scope": e.Scope, "resource": e.Resource,
		} {
			if v != "" {
				entra[k] = v
			}
		}
		if e.ManagedIdentity != nil {
			entra["managed_identity"] = *e.ManagedIdentity
		}
		if s := ceilUnit(e.RefreshBefore, time.Second); s != nil {
			entra["refresh_before_secs"] = *s
		}
		if ms := ceilUnit(e.Timeout, time.Millisecond); ms != nil {
			entra["timeout_ms"] = *ms
		}
		cfg["entra"] = entra
	}
	return cfg
}

func parseCosmosCaddyfile(h httpcaddyfile.Helper) (caddyhttp.MiddlewareHandler, error) {
	m := new(CosmosHandler)
	if err := m.UnmarshalCaddyfile(h.Dispenser); err != nil {
		return nil, err
	}
	return m, nil
}

// UnmarshalCaddyfile sets up the handler from Caddyfile tokens:
//
//	iap_cosmos {
//	    issuer <url> { audience <aud...> ... }    # as for iap
//	    role <name> claim <claim> <op> <value>     # as for iap
//	    grant <role> <action...> on <scope...>
//	    account_key_env <VAR> | account_key_file <path>
//	    entra {
//	        token_url <url>
//	        client_id <id>
//	        client_secret_env <VAR> | client_secret_file <path>
//	        scope <scope>
//	        managed_identity [<endpoint>]
//	        resource <uri>
//	        refresh_before <duration>
//	        timeout <duration>
//	    }
//	    cache_size <n>
//	    max_token_size <bytes>
//	    audit
//	}
func (h *CosmosHandler) UnmarshalCaddyfile(d *caddyfile.Dispenser) error {
	d.Next() // consume the directive name
	directive := d.Token()
	if d.NextArg() {
		return d.ArgErr()
	}
	seen := map[string]bool{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		sub := d.Val()
		if !h.repeatable(sub) && sub != "grant" {
			if seen[sub] {
				return d.Errf("%s is set twice", sub)
			}
			seen[sub] = true
		}
		known, err := h.TokenIdentity.unmarshalSubdirective(d)
		if known {
			if err != nil {
				return err
			}
			continue
		}
		switch sub {
		case "grant":
			err = h.parseGrant(d)
		case "account_key_env":
			err = oneArg(d, &h.AccountKeyEnv)
		case "account_key_file":
			err = oneArg(d, &h.AccountKeyFile)
		case "entra":
			h.Entra, err = parseEntra(d)
		case "audit":
			if d.NextArg() {
				return d.ArgErr()
			}
			h.Audit = true
		default:
			return d.Errf("unknown iap_cosmos subdirective %q", sub)
		}
		if err != nil {
			return err
		}
	}
	if err := h.Validate(); err != nil {
		return errAt(directive, "iap_cosmos: %v", err)
	}
	return nil
}

// parseGrant parses `grant <role> <action...> on <scope...>`.
func (h *CosmosHandler) parseGrant(d *caddyfile.Dispenser) error {
	args := d.RemainingArgs()
	on := slices.Index(args, "on")
	if len(args) < 4 || on < 2 || on == len(args)-1 {
		return d.Errf("usage: grant <role> <action...> on <scope...>")
	}
	h.Grants = append(h.Grants, CosmosGrant{Role: args[0], Actions: args[1:on], Scopes: args[on+1:]})
	return nil
}

func parseEntra(d *caddyfile.Dispenser) (*CosmosEntra, error) {
	if d.NextArg() {
		return nil, d.ArgErr()
	}
	e := &CosmosEntra{}
	for nesting := d.Nesting(); d.NextBlock(nesting); {
		var err error
		switch d.Val() {
		case "token_url":
			err = oneArg(d, &e.TokenURL)
		case "client_id":
			err = oneArg(d, &e.ClientID)
		case "client_secret_env":
			err = oneArg(d, &e.ClientSecretEnv)
		case "client_secret_file":
			err = oneArg(d, &e.ClientSecretFile)
		case "scope":
			err = oneArg(d, &e.Scope)
		case "resource":
			err = oneArg(d, &e.Resource)
		case "managed_identity":
			endpoint := ""
			if d.NextArg() {
				endpoint = d.Val()
			}
			if d.NextArg() {
				return nil, d.ArgErr()
			}
			e.ManagedIdentity = &endpoint
		case "refresh_before":
			err = durationArg(d, &e.RefreshBefore)
		case "timeout":
			err = durationArg(d, &e.Timeout)
		default:
			return nil, d.Errf("unknown entra subdirective %q", d.Val())
		}
		if err != nil {
			return nil, err
		}
	}
	return e, nil
}

// Interface guards
var (
	_ caddy.Provisioner     = (*CosmosHandler)(nil)
	_ caddy.Validator       = (*CosmosHandler)(nil)
	_ caddyfile.Unmarshaler = (*CosmosHandler)(nil)
)
