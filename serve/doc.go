// Package serve is tinct's web app: upload a photograph, see it in gray at
// the model's size, colorize it with a checkpoint's EMA network while the
// reverse diffusion reports its progress, and download the results; and a
// dashboard of a training run (loss plots, sample grids, cluster status).
//
// The page and its script and style sheet are embedded in the binary (no
// build step, nothing from other sites). Everything else the server sends is
// computed from the checkpoint store and the run directory it was given.
//
// # Endpoints
//
//	GET  /                      the page
//	GET  /static/{file}         its script, style sheet and icon
//	GET  /api/checkpoints       the store's checkpoints, newest first, and the default
//	GET  /api/limits            upload limits and field ranges, for the page's own checks
//	POST /api/gray              multipart: image [, checkpoint] → the photo in gray at the model's size
//	POST /api/colorize          multipart: image, steps (10–100), samples (1–8) [, checkpoint, seed]
//	                            → text/event-stream: queued, start, progress…, done | error
//	GET  /api/run               the dashboard's data: loss per step and per epoch, sample grids
//	GET  /run/images/{file}     a PNG from the run directory's images/ folder
//	GET  /api/cluster           the cluster's status (not attached to a coordinator yet)
//
// Errors are JSON objects {"error": "…"} with a 4xx or 5xx status. Bad
// input (a non-image, a damaged or truncated image, an image over the byte
// or pixel limit, a missing or out-of-range field) is a 4xx, checked before
// any event is streamed. Beyond one running colorization and
// [Options.Queue] waiting ones the answer is 503 with a Retry-After header.
//
// # Colorization
//
// One colorization runs at a time (the kernels already use every core).
// A request is admitted to the queue after its form is read and checked, or
// refused with 503; it then decodes the image (at most two decodes run at
// once), streams "queued" if it has to wait, and runs. Its work stops at the
// next diffusion step when the client goes away (the request's context).
// Networks are cached per checkpoint (two) and samplers per (checkpoint,
// samples), least recently used first out, up to 8 images' worth of arenas
// between them (a sampler's arena is 91 MiB per image at 128²).
package serve
