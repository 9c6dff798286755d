// Validates the chart's KEDA and prometheus-operator resources (JSON arrays of manifests,
// written by checks.py) against the CRD schemas shipped, compiled, in the npm packages
// @kubernetes-models/keda and @kubernetes-models/prometheus-operator. scripts/lint-deploy copies
// this file next to their node_modules, so that the bare imports resolve.
//
//   node check-crds.mjs RENDER.crds.json...
import { readFileSync } from "node:fs";
import * as keda from "@kubernetes-models/keda/keda.sh/v1alpha1";
import * as prom from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const models = {
  "keda.sh/v1alpha1/ScaledObject": keda.ScaledObject,
  "keda.sh/v1alpha1/TriggerAuthentication": keda.TriggerAuthentication,
  "monitoring.coreos.com/v1/ServiceMonitor": prom.ServiceMonitor,
  "monitoring.coreos.com/v1/PrometheusRule": prom.PrometheusRule,
};
const counts = {};
const problems = [];
for (const file of process.argv.slice(2)) {
  for (const doc of JSON.parse(readFileSync(file, "utf8"))) {
    const key = `${doc.apiVersion}/${doc.kind}`;
    const Model = models[key];
    if (!Model) {
      problems.push(`${file}: no CRD schema known for ${key}`);
      continue;
    }
    try {
      new Model(doc).validate();
      counts[doc.kind] = (counts[doc.kind] ?? 0) + 1;
    } catch (e) {
      problems.push(`${file}: ${key} ${doc.metadata.name}: ${e.message}`);
    }
  }
}
if (problems.length) {
  console.error(problems.join("\n"));
  process.exit(1);
}
const summary = Object.entries(counts).map(([k, v]) => `${k} ${v}`).join(", ");
if (!summary) {
  console.error("no KEDA or prometheus-operator resource was rendered: nothing validated");
  process.exit(1);
}
console.log(`valid against the CRD schemas: ${summary}`);
