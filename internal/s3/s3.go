// Package s3 makes the minio-go client that tinct's S3 users share: the
// checkpoint store (checkpoint.OpenS3) and prepared datasets in a bucket
// (dataset.Fetch, Upload, EnsureBucket). It holds the options (endpoint,
// TLS, region), the environment variables that set them, and the
// credentials from AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or their
// _FILE forms), so both read the same settings the same way.
package s3

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
)

// Options configures how a client reaches an S3 server.
// checkpoint.Options is this type.
type Options struct {
	// S3Endpoint is the S3 server, host[:port] ("minio.internal:9000").
	// A scheme, as in http://host:port, sets TLS and overrides S3Secure.
	// Empty means Amazon S3 (s3.amazonaws.com).
	S3Endpoint string
	// S3Secure speaks HTTPS to the endpoint; false speaks plain HTTP.
	S3Secure bool
	// S3Region is the bucket's region; empty asks the server.
	S3Region string
}

// Environment variables EnvOptions reads.
const (
	EnvEndpoint = "TINCT_S3_ENDPOINT" // Options.S3Endpoint
	EnvInsecure = "TINCT_S3_INSECURE" // "1": plain HTTP (Options.S3Secure false)
	EnvRegion   = "TINCT_S3_REGION"   // Options.S3Region
)

// EnvOptions returns the options from the environment: the endpoint from
// TINCT_S3_ENDPOINT (empty: Amazon S3), TLS on unless TINCT_S3_INSECURE=1,
// and the region from TINCT_S3_REGION (empty: ask the server).
func EnvOptions() Options {
	insecure, _ := strconv.ParseBool(os.Getenv(EnvInsecure))
	return Options{
		S3Endpoint: os.Getenv(EnvEndpoint),
		S3Secure:   !insecure,
		S3Region:   os.Getenv(EnvRegion),
	}
}

// NewClient makes a minio-go client from opt and the credentials in
// AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN), for
// the checkpoint store and anything else tinct reads from S3; need says
// what the user must be allowed, for the error when credentials are
// missing. It returns the endpoint URL and the access key ID for messages.
// It makes no request.
func NewClient(opt Options, need string) (client *minio.Client, endpoint, keyID string, err error) {
	host, secure, err := parseEndpoint(opt)
	if err != nil {
		return nil, "", "", err
	}
	endpoint = "https://" + host
	if !secure {
		endpoint = "http://" + host
	}
	key, err := envOrFile("AWS_ACCESS_KEY_ID")
	if err != nil {
		return nil, "", "", err
	}
	secret, err := envOrFile("AWS_SECRET_ACCESS_KEY")
	if err != nil {
		return nil, "", "", err
	}
	var missing []string
	if key == "" {
		missing = append(missing, "AWS_ACCESS_KEY_ID")
	}
	if secret == "" {
		missing = append(missing, "AWS_SECRET_ACCESS_KEY")
	}
	if len(missing) > 0 {
		verb := "is"
		if len(missing) > 1 {
			verb = "are"
		}
		return nil, "", "", fmt.Errorf("no S3 credentials: %s %s not set; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY to the access key and secret key of a user who may %s",
			strings.Join(missing, " and "), verb, need)
	}
	client, err = minio.New(host, &minio.Options{
		Creds:  credentials.NewStaticV4(key, secret, os.Getenv("AWS_SESSION_TOKEN")),
		Secure: secure,
		Region: opt.S3Region,
	})
	if err != nil {
		return nil, "", "", fmt.Errorf("endpoint %s: %w", endpoint, err)
	}
	return client, endpoint, key, nil
}

// envOrFile is the variable name's value, or — the container-secret
// convention — the content of the file that name_FILE names (trailing
// newlines trimmed), so credentials need not be in the environment.
func envOrFile(name string) (string, error) {
	if f := os.Getenv(name + "_FILE"); f != "" {
		b, err := os.ReadFile(f)
		if err != nil {
			return "", fmt.Errorf("%s_FILE: %w", name, err)
		}
		return strings.TrimRight(string(b), "\r\n"), nil
	}
	return os.Getenv(name), nil
}

// parseEndpoint returns host[:port] and whether to use TLS.
func parseEndpoint(opt Options) (host string, secure bool, err error) {
	ep, secure := strings.TrimSpace(opt.S3Endpoint), opt.S3Secure
	if ep == "" {
		return "s3.amazonaws.com", secure, nil
	}
	if scheme, rest, ok := strings.Cut(ep, "://"); ok {
		switch strings.ToLower(scheme) {
		case "https":
			secure = true
		case "http":
			secure = false
		default:
			return "", false, fmt.Errorf("S3 endpoint %q: scheme %q is not http or https", ep, scheme)
		}
		ep = strings.TrimSuffix(rest, "/")
	}
	if ep == "" || strings.ContainsAny(ep, "/?#@ ") {
		return "", false, fmt.Errorf("S3 endpoint %q: give host[:port], e.g. minio.internal:9000 (no path)", opt.S3Endpoint)
	}
	return ep, secure, nil
}
