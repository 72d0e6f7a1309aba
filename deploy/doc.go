// Package deploy holds how tinct is run on container platforms: the image
// (Dockerfile, base-image.sh), a compose cluster with its fault test
// (compose.yaml, test.sh) and Kubernetes manifests (kubernetes/). Its Go
// tests decode the manifests strictly into the Kubernetes API types and
// check them against the tinct binary's flags and configuration keys.
package deploy
