#!/bin/sh
# Writes argocd-cm.yaml from health.lua; tests/health_checks.rs fails when the
# two disagree. Run it after changing health.lua.
set -eu
cd "$(dirname "$0")"
{
  cat <<'EOF'
# The upgrade-guard health check for Argo CD, generated from health.lua by
# make-argocd-cm.sh. Merge these keys into your argocd-cm, e.g.
#   kubectl -n argocd patch configmap argocd-cm --type merge --patch-file argocd-cm.yaml
# useOpenLibs gives the script Lua's string library, which reading the
# refresh record needs (Argo CD leaves the standard libraries out by default).
apiVersion: v1
kind: ConfigMap
metadata:
  name: argocd-cm
  namespace: argocd
  labels:
    app.kubernetes.io/name: argocd-cm
    app.kubernetes.io/part-of: argocd
data:
  resource.customizations.useOpenLibs.apps_StatefulSet: "true"
  resource.customizations.useOpenLibs.apps_Deployment: "true"
EOF
  for kind in StatefulSet Deployment; do
    echo "  resource.customizations.health.apps_$kind: |"
    sed -e 's/^/    /' -e 's/^ *$//' health.lua
  done
} > argocd-cm.yaml
