#!/bin/sh
# Runs once in the gitea-setup container (Gitea's image; it shares Gitea's volumes). Every step
# is skipped when already done, so `docker compose up` can run it again.
set -eu
gitea_admin() { gitea --config /etc/gitea/app.ini admin "$@"; }
api() { # METHOD PATH [JSON]: Gitea's API as its admin
  curl -fsS -u "gitea-admin:$GITEA_ADMIN_PASSWORD" -X "$1" -H 'Content-Type: application/json' \
    ${3:+--data "$3"} "$GITEA_URL/api/v1$2"
}

# 1. An admin for this script (people sign in through authentik).
gitea_admin user list --admin | grep -q ' gitea-admin ' ||
  gitea_admin user create --admin --username gitea-admin --email gitea-admin@example.com \
    --password "$GITEA_ADMIN_PASSWORD" --must-change-password=false

# 2. Sign-in through authentik (its provider is in authentik/stack.yaml).
gitea_admin auth list | grep -q 'authentik' ||
  gitea_admin auth add-oauth --name authentik --provider openidConnect --key gitea \
    --secret "$GITEA_OIDC_SECRET" --scopes 'openid email profile' \
    --auto-discover-url "$AUTHENTIK_URL/application/o/gitea/.well-known/openid-configuration"

# 3. An org whose repositories only signed-in users see, and a repository in it: a clone
#    without a token fails, a clone with a user's token works.
api GET /orgs/org >/dev/null 2>&1 ||
  api POST /orgs '{"username":"org","visibility":"limited"}' >/dev/null
api GET /repos/org/repo >/dev/null 2>&1 ||
  api POST /orgs/org/repos '{"name":"repo","auto_init":true,"default_branch":"main"}' >/dev/null

# 4. The OAuth2 app extauth links users with. Gitea makes the client id and secret; they go
#    to the forge-app volume, mode 0640: the broker reads them as a member of group 1000.
if [ ! -s /run/forge-app/client-secret ]; then
  app=$(api POST /user/applications/oauth2 \
    "{\"name\":\"extauth\",\"confidential_client\":true,\"redirect_uris\":[\"$EXTAUTH_URL/external-auth/gitea/callback\"]}")
  umask 027
  printf '%s' "$app" | sed -n 's/.*"client_id":"\([^"]*\)".*/\1/p' > /run/forge-app/client-id
  printf '%s' "$app" | sed -n 's/.*"client_secret":"\([^"]*\)".*/\1/p' > /run/forge-app/client-secret
  test -s /run/forge-app/client-id && test -s /run/forge-app/client-secret
fi
echo "Gitea is set up: $PUBLIC_GITEA_URL/org/repo"
