// Package deploytest checks the deployment artefacts under deploy/
// (Dockerfile, compose, Kubernetes, Helm values, systemd units, example
// configurations, Grafana dashboard) without Docker, a cluster or systemd.
//
// The tests parse every YAML and JSON file, check the structural facts the
// artefacts depend on (ports, probes, grace periods, names that must agree
// across files), and run the real `jetrelay config check` in-process on
// every jetrelay configuration the artefacts use — with the environment
// variables and flags the artefacts set — so that a renamed or mistyped
// key breaks the build instead of a deployment.
//
// The package has no non-test code.
package deploytest
