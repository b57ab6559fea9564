//! The schema, as numbered migrations applied in order (add new ones at the end).

/// Schema versions, applied in order, each in its own transaction. Append; never edit.
pub(super) const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r"
CREATE TABLE users (
    id text PRIMARY KEY,
    username text NOT NULL UNIQUE,
    email text NOT NULL,
    name text NOT NULL,
    is_admin boolean NOT NULL,
    oidc_issuer text,
    oidc_subject text,
    created_at bigint NOT NULL,
    UNIQUE (oidc_issuer, oidc_subject)
);
CREATE TABLE sessions (
    id_hash text PRIMARY KEY,
    user_id text NOT NULL,
    csrf text NOT NULL,
    created_at bigint NOT NULL,
    expires_at bigint NOT NULL,
    oidc boolean NOT NULL,
    oidc_sid text,
    oidc_id_token text,
    oidc_id_token_key_id text,
    oidc_refresh_token text,
    oidc_refresh_token_key_id text
);
CREATE INDEX sessions_user ON sessions (user_id);
CREATE TABLE api_tokens (
    id text PRIMARY KEY,
    kind text NOT NULL,
    user_id text NOT NULL,
    name text NOT NULL,
    secret_hash text NOT NULL,
    providers text[],
    created_at bigint NOT NULL,
    expires_at bigint
);
CREATE INDEX api_tokens_user ON api_tokens (user_id, kind, created_at);
CREATE TABLE external_auth_links (
    user_id text NOT NULL,
    provider_id text NOT NULL,
    access_token text NOT NULL,
    access_token_key_id text,
    refresh_token text,
    refresh_token_key_id text,
    expires_at bigint,
    extra text,
    extra_key_id text,
    refresh_failure text,
    needs_validation boolean NOT NULL,
    created_at bigint NOT NULL,
    updated_at bigint NOT NULL,
    PRIMARY KEY (user_id, provider_id)
);
CREATE TABLE pending_revocations (
    id text PRIMARY KEY,
    user_id text NOT NULL,
    provider_id text NOT NULL,
    access_token text NOT NULL,
    access_token_key_id text,
    refresh_token text,
    refresh_token_key_id text,
    attempts integer NOT NULL,
    next_attempt_at bigint NOT NULL,
    last_error text NOT NULL,
    created_at bigint NOT NULL
);
CREATE INDEX pending_revocations_due ON pending_revocations (next_attempt_at);
CREATE INDEX pending_revocations_user ON pending_revocations (user_id);
CREATE TABLE dbcrypt_keys (
    key_id text PRIMARY KEY,
    revoked_at bigint NOT NULL
);
",
    ),
    (
        2,
        r"
CREATE TABLE device_flows (
    code_hash text PRIMARY KEY,
    user_id text NOT NULL,
    provider_id text NOT NULL,
    interval_ms bigint NOT NULL,
    next_poll_ms bigint NOT NULL,
    expires_ms bigint NOT NULL
);
CREATE INDEX device_flows_expiry ON device_flows (expires_ms);
",
    ),
    (
        3,
        r"
CREATE TABLE oidc_claims (
    user_id text PRIMARY KEY,
    claims text NOT NULL,
    updated_at bigint NOT NULL
);
",
    ),
    (
        4,
        r"
CREATE TABLE login_flows (
    state_hash text PRIMARY KEY,
    binding_hash text NOT NULL,
    user_id text NOT NULL,
    purpose text NOT NULL,
    verifier text,
    verifier_key_id text,
    nonce text NOT NULL,
    redirect text NOT NULL,
    expires_ms bigint NOT NULL
);
CREATE INDEX login_flows_expiry ON login_flows (expires_ms);
",
    ),
    (
        5,
        r"
CREATE TABLE oauth2_apps (
    id text PRIMARY KEY,
    created_at bigint NOT NULL,
    doc text NOT NULL
);
CREATE TABLE oauth2_codes (
    code_hash text PRIMARY KEY,
    used boolean NOT NULL,
    expires_ms bigint NOT NULL,
    doc text NOT NULL
);
CREATE INDEX oauth2_codes_expiry ON oauth2_codes (expires_ms);
CREATE TABLE oauth2_grants (
    user_id text NOT NULL,
    app_id text NOT NULL,
    doc text NOT NULL,
    PRIMARY KEY (user_id, app_id)
);
CREATE INDEX oauth2_grants_app ON oauth2_grants (app_id);
CREATE TABLE oauth2_families (
    id text PRIMARY KEY,
    app_id text NOT NULL,
    user_id text NOT NULL,
    secret_id text,
    refresh_hash text NOT NULL,
    expires_at bigint NOT NULL,
    doc text NOT NULL
);
CREATE INDEX oauth2_families_app ON oauth2_families (app_id, user_id);
CREATE INDEX oauth2_families_expiry ON oauth2_families (expires_at);
CREATE TABLE signing_keys (
    kid text PRIMARY KEY,
    created_at bigint NOT NULL,
    doc text NOT NULL
);
CREATE TABLE oauth2_device_grants (
    code_hash text PRIMARY KEY,
    user_code text NOT NULL UNIQUE,
    decision text NOT NULL,
    next_poll_ms bigint NOT NULL,
    expires_ms bigint NOT NULL,
    doc text NOT NULL
);
CREATE INDEX oauth2_device_grants_expiry ON oauth2_device_grants (expires_ms);
",
    ),
    (
        6,
        r"
CREATE TABLE oauth2_resources (
    id text PRIMARY KEY,
    created_at bigint NOT NULL,
    doc text NOT NULL
);
CREATE TABLE runtime_settings (
    name text PRIMARY KEY,
    value text NOT NULL
);
CREATE TABLE git_ssh_keys (
    user_id text PRIMARY KEY,
    doc text NOT NULL
);
",
    ),
    (
        7,
        r"
ALTER TABLE external_auth_links ADD COLUMN refresh_expires_at bigint;
ALTER TABLE external_auth_links ADD COLUMN account text NOT NULL DEFAULT '';
ALTER TABLE external_auth_links ADD COLUMN is_default boolean NOT NULL DEFAULT true;
ALTER TABLE external_auth_links ADD COLUMN owners text NOT NULL DEFAULT '[]';
ALTER TABLE external_auth_links DROP CONSTRAINT external_auth_links_pkey;
ALTER TABLE external_auth_links ADD PRIMARY KEY (user_id, provider_id, account);
",
    ),
    (
        8,
        r"
CREATE TABLE used_once (
    key text PRIMARY KEY,
    expires_at bigint NOT NULL
);
CREATE INDEX used_once_expiry ON used_once (expires_at);
",
    ),
    (
        9,
        r"
-- The keys that sealed a stored link ('' for a plaintext value), kept by a trigger: start-up
-- checks the key of every stored value, and reading millions of links for it took seconds.
-- A superset: link writes add to it; dbcrypt's revocation makes it exact (link_key_ids_exact).
CREATE TABLE link_key_ids (key_id text PRIMARY KEY);
CREATE FUNCTION link_key_ids_of(l external_auth_links) RETURNS SETOF text LANGUAGE sql AS $$
    SELECT coalesce(l.access_token_key_id, '')
    UNION SELECT coalesce(l.refresh_token_key_id, '') WHERE l.refresh_token IS NOT NULL
    UNION SELECT coalesce(l.extra_key_id, '') WHERE l.extra IS NOT NULL
$$;
CREATE FUNCTION note_link_key_ids() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO link_key_ids SELECT link_key_ids_of(NEW) ON CONFLICT DO NOTHING;
    RETURN NULL;
END
$$;
CREATE TRIGGER link_key_ids AFTER INSERT OR UPDATE ON external_auth_links
    FOR EACH ROW EXECUTE FUNCTION note_link_key_ids();
CREATE FUNCTION link_key_ids_exact() RETURNS void LANGUAGE sql AS $$
    DELETE FROM link_key_ids;
    INSERT INTO link_key_ids SELECT DISTINCT link_key_ids_of(l) FROM external_auth_links l;
$$;
SELECT link_key_ids_exact();
",
    ),
];
