// Package serve is tinct's web app: choose a photograph (or paste one, or
// pick an example), see it as it is and in gray as the network sees it,
// colorize it with a checkpoint's EMA network while the reverse diffusion
// reports its progress, and download the results at the photo's own size
// (the network's colours on its own luminance, package chroma) or at the
// model's; and a dashboard of a training run (loss plots, sample grids,
// cluster status).
//
// The page, its script and style sheet and the example photos are embedded
// in the binary (no build step, nothing from other sites). Everything else
// the server sends is computed from the checkpoint store and the run
// directory it was given. docs/serve.md is the reference for the page, the
// API (every endpoint and every event of the colorization stream) and the
// limits.
//
// # Endpoints
//
//	GET  /                           the page
//	GET  /static/{file}              its script, style sheet, icon and examples
//	POST /api/login                  {"token"} → the session cookie (servers with a token)
//	GET  /api/checkpoints            the store's checkpoints, newest first, and the default
//	GET  /api/limits                 upload limits and field ranges, for the page's own checks
//	POST /api/gray                   multipart: image [, checkpoint] → the network's input, the photo's size and frame
//	POST /api/colorize               multipart: image, steps (10–100), samples (1–8) [, checkpoint, seed]
//	                                 → text/event-stream: queued…, start, progress…, preview…, done | error
//	GET  /api/results/{id}/{k}.png   a result at the photo's own size
//	GET  /api/run                    the dashboard's data: loss per step and per epoch, sample grids
//	GET  /run/images/{file}          a PNG from the run directory's images/ folder
//	GET  /api/cluster                the cluster's status (Options.Cluster)
//
// Errors are JSON objects {"error": "…"} with a 4xx or 5xx status, without
// server paths or Go error texts (those go to the log). Bad input (a
// non-image, a damaged or truncated image, an image over the byte, pixel or
// decoded-size limit, an upload that arrives too slowly, a missing or
// out-of-range field) is a 4xx, checked before any event is streamed.
// Beyond one running colorization and [Options.Queue] waiting ones the
// answer is 503 with a Retry-After header.
//
// # Access
//
// Without [Options.Token] only requests addressed to a loopback host are
// served; with it, the API needs the token (a bearer header or the cookie
// of /api/login). Either way a POST from another site's page (Origin,
// Sec-Fetch-Site) is refused before its body is read.
//
// # Colorization
//
// One colorization runs at a time (the kernels already use every core).
// A request takes a place in the queue before its upload is read, waiting
// for one in arrival order up to [Options.AdmitWait] (then 503 with
// Retry-After); each client address holds at most [Options.MaxPerClient]
// places of a kind. It reads the upload under a deadline for its first
// byte ([Options.FirstByteTimeout]) and one that grows with the bytes from
// the start ([Options.MinBodyRate]), then reserves, before any pixel is
// decoded, the peak memory of its decode, gray, rotation and fit (known
// from the header) against one byte budget shared with the kept results
// ([Options.MemoryBudget]; waiting as above, 413 for a photo over the
// whole budget), decodes, gives back what it no longer needs, then waits
// in line, told its place whenever it changes, and runs. Its work
// stops at the next diffusion step when the client goes away. Networks are
// cached per checkpoint (two) and samplers per (checkpoint, samples), least
// recently used first out, up to 8 images' worth of arenas between them (a
// sampler's arena is 91 MiB per image at 128²). Finished colorizations are
// kept for their full-size downloads ([Options.MaxResultBytes], an hour),
// which are made when asked for and streamed row by row.
package serve
