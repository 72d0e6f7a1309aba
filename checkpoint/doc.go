// Package checkpoint stores training checkpoints: saving, listing, verifying,
// loading and pruning them. A checkpoint is a set of named parts (byte blobs
// the trainer produces, such as "weights.safetensors", "ema.safetensors",
// "optimizer.safetensors", "state.json" and "config.yaml") plus a small
// header (name, run, step, epoch, time). The package knows nothing about
// models; it guarantees that what Load returns is byte for byte what Save
// was given.
//
// Stores are opened by URL with [Open] (or [OpenWith]): a plain path or
// file:///abs/dir is a directory store ([Dir]); s3://bucket/prefix is an S3
// store ([S3]). Both keep the same files in the same layout, with the same
// manifest, and behave the same way except where S3 lacks a rename (see
// "S3 stores" below).
//
// # Directory layout
//
//	<dir>/
//	    latest                      name of the most recently saved checkpoint, one line
//	    step-000006000/
//	        manifest.json           written last; see below
//	        weights.safetensors     one file per part, named after the part
//	        ema.safetensors
//	        ...
//	    step-000012345/
//	        ...
//	    .tmp-<name>-<random>/       a save in progress (or cut short by a crash)
//	    .tmp-latest-<random>        a pointer update in progress
//	    .old-<name>-<random>/       a checkpoint being replaced by a save of the same name
//	    .del-<name>-<random>/       a checkpoint being deleted
//
// manifest.json records the format version, the header and, for every part,
// its size and SHA-256:
//
//	{
//	  "version": 1,
//	  "name": "step-000012345",
//	  "run": "3f9c0a7d21e4b658",
//	  "step": 12345,
//	  "epoch": 50,
//	  "time": "2025-01-02T03:04:05.123456789Z",
//	  "parts": [{"name": "weights.safetensors", "size": 7802636, "sha256": "9f86d0…"}]
//	}
//
// "run" identifies the training run that saved the checkpoint (tinct's
// trainer: 16 hex digits from crypto/rand, made when a run starts afresh and
// kept when it resumes); it is left out when empty, and manifests of an
// older tinct have none, which reads as run "". Names are the caller's;
// tinct's trainer names each checkpoint after its global step, step-%09d, so
// two runs in one store would save the same names: a store is meant for one
// run (the trainer refuses to start a new run in a store that holds
// checkpoints unless told to delete them, and stops when it finds another
// run's checkpoint before a save). The directory name is authoritative for a
// checkpoint's name. List shows only directories with a usable manifest;
// Latest also warns about those whose manifest.json exists but is damaged. A
// directory without a manifest.json is not a checkpoint and is ignored.
//
// # Crash safety
//
// Save writes every part and then the manifest into <dir>/.tmp-<name>-<random>/,
// fsyncing each file and the directory, renames that directory to <dir>/<name>,
// fsyncs <dir>, and only then replaces <dir>/latest atomically (temporary file,
// fsync, rename, fsync <dir>). A crash at any point leaves every earlier
// checkpoint and the latest pointer valid: either the new checkpoint is
// complete and visible or it is invisible (hidden in a .tmp- directory).
//
// Saving a name that already exists replaces it: the old directory is first
// renamed to .old-<name>-<random>, the new one renamed into place, and the old
// one removed. If a crash falls between those two renames, the next Save or
// Prune renames the old checkpoint back, so nothing is lost; until then Latest
// warns and falls back to the newest other valid checkpoint. A directory of
// that name that holds no manifest.json is not replaced (Save reports it).
//
// Delete and Prune rename a checkpoint to .del-<name>-<random> before removing
// its files, so a crash never leaves a half-deleted checkpoint in view.
// Leftover .tmp-, .old- and .del- entries are ignored by List and Latest and
// cleaned up by the next Save or Prune. Nothing else in the directory is ever
// removed: a directory without a manifest may be someone's data, so it is left
// alone (delete it by hand).
//
// # S3 stores
//
// s3://bucket/prefix keeps the directory layout as objects (prefix may be
// empty, or several segments, as in s3://bucket/runs/a):
//
//	<prefix>/latest                       name of the most recently saved checkpoint, one line
//	<prefix>/step-000012345/manifest.json uploaded last; the same format as above
//	<prefix>/step-000012345/weights.safetensors
//	...
//
// Open takes the server from the environment: TINCT_S3_ENDPOINT is its
// host[:port] (empty: Amazon S3; a scheme, http:// or https://, decides TLS
// itself), TLS is on unless TINCT_S3_INSECURE=1, and TINCT_S3_REGION is the
// bucket's region (empty: ask the server). [OpenWith] takes the same as
// [Options] instead. The credentials always come from AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN, if set); Open says to set
// them when they are missing. The bucket must exist: Open checks that it
// does and that the credentials may list it, and never creates it. Errors
// such as a wrong secret (SignatureDoesNotMatch), an unknown access key, a
// missing bucket or a TLS mismatch come with what to check.
//
// Save uploads every part, then the manifest, then latest. A checkpoint
// becomes visible to List, Load and Latest only when its manifest is
// there, so a save cut short (a crash, a cancel, the server going away)
// leaves the earlier checkpoints and latest as they were; latest never names
// a checkpoint whose upload did not finish. A Save that fails while the
// server can still be reached removes the parts it uploaded; otherwise they
// stay under <prefix>/<name>/ without a manifest, which is not a checkpoint,
// and the next save of that name replaces them. Unlike the directory store,
// an S3 store saves over such manifest-less objects, and removes whatever
// else is under <prefix>/<name>/ when the save completes: everything under
// <prefix>/<name>/ for a checkpoint name belongs to the store. (Delete still
// refuses a name without a manifest.)
//
// S3 cannot rename, so replacing a checkpoint differs: Save first deletes
// the existing manifest of that name, hiding the old checkpoint, and then
// uploads. If that save is cut short, the old checkpoint of that name is
// lost and Latest warns and falls back to the newest other valid checkpoint.
// Saving each checkpoint under a new name (step-000006000, step-000012345, ...)
// never runs that risk. Delete and Prune delete a checkpoint's manifest
// first, so that it vanishes at once, then its other objects; if they are
// cut short, the rest is left as above.
//
// Large parts go up as multipart uploads (minio-go's choice: 16 MiB pieces
// and up, several at a time); cancelling the context stops an upload, and a
// failed multipart upload is aborted. One that could not be aborted (the
// server was gone) is not an object and does not show; servers drop it
// later (MinIO after a day by default; on Amazon S3 add a lifecycle rule
// that aborts incomplete multipart uploads).
//
// # Resuming
//
// [Store.Latest] loads the newest valid checkpoint in [Store.List] order
// (highest step, then newest time), verifying every part; one that is
// truncated, corrupt or unreadable is reported as a warning and the next is
// tried. The next is always of the same run: the newest listed checkpoint
// decides the run, and falling back past its damaged ones skips other runs'
// checkpoints (each reported as an [*OtherRunError]), so a resume never
// continues another run. When that run has no valid checkpoint, Latest fails
// (a [*NoValidError] that names the run and counts the other runs'
// checkpoints it skipped) even if another run's is valid: move the damaged
// ones away to resume from it on purpose. The latest pointer is only a hint:
// Save moves it last, so a process killed after a checkpoint was complete
// but before the pointer moved leaves it at the previous one, and that newer
// checkpoint must not be lost. A pointer at a checkpoint that is not listed
// (deleted by hand, or without its manifest) is reported. With no valid
// checkpoint Latest fails with [ErrNotFound]: [ErrEmpty] when the store
// holds nothing at all, otherwise a [*NoValidError] that names the store and
// what was wrong with each candidate, so that a resume stops instead of
// starting afresh.
//
// # Retention
//
// [Store.Prune] keeps the newest keep valid checkpoints and removes the
// older ones. It verifies the checkpoints it keeps, as Load does: a damaged
// one does not count (it stays, and is reported), so a store of damaged
// checkpoints never pushes out a good one, and the newest valid checkpoint
// is never removed. Verifying reads the kept checkpoints in full, once per
// Prune.
//
// # Concurrency
//
// A Dir or an S3 may be used from many goroutines: Load, List, Latest and
// Verify run concurrently with each other and with Save; Save, Delete and
// Prune are serialised. One process should write to a store at a time (the
// coordinator); any number may read it. Nothing in a store locks it: two
// trainers started on one store at once find each other only when one
// lists the other's checkpoint before a save. A Load racing a Delete or a
// replacement of the same name may fail; it never returns mixed data (every
// part is checked against the manifest it read).
package checkpoint
