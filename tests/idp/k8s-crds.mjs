// Validates the custom resources in a multi-document YAML file (rendered by `helm template`)
// against their CRDs' OpenAPI schemas, with the kubernetes-models packages: the Gateway API's
// HTTPRoute and the Prometheus Operator's ServiceMonitor and PrometheusRule, which
// kubernetes-validate (core API schemas only) does not know.
//
//   node k8s-crds.mjs rendered.yaml   → one JSON line per custom resource: {kind, name, ok, error}
// Exits 1 when one is invalid or its kind is unknown here.
import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";

const packages = {
  "gateway.networking.k8s.io": "@kubernetes-models/gateway-api",
  "monitoring.coreos.com": "@kubernetes-models/prometheus-operator",
};

let failed = false;
for (const doc of parseAllDocuments(readFileSync(process.argv[2], "utf8"))) {
  const object = doc.toJS();
  if (!object || !object.apiVersion) continue;
  const [group, version] = object.apiVersion.includes("/") ? object.apiVersion.split("/") : ["", object.apiVersion];
  if (!group.includes(".") || group.endsWith(".k8s.io") && !packages[group]) continue; // a core API kind
  const result = { kind: object.kind, name: object.metadata?.name, ok: false };
  const pkg = packages[group];
  if (!pkg) {
    result.error = `no schema known for ${object.apiVersion}`;
  } else {
    try {
      const module = await import(`${pkg}/${group}/${version}/${object.kind}`);
      new module[object.kind](object).validate();
      result.ok = true;
    } catch (e) {
      result.error = String(e.message ?? e);
    }
  }
  failed ||= !result.ok;
  console.log(JSON.stringify(result));
}
process.exit(failed ? 1 : 0);
