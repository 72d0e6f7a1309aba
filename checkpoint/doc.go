// Package checkpoint stores training checkpoints: saving, listing, verifying,
// loading and pruning them. A checkpoint is a set of named parts (byte blobs
// the trainer produces, such as "weights.safetensors", "ema.safetensors",
// "optimizer.safetensors", "state.json" and "config.yaml") plus a small
// header (name, step, epoch, time). The package knows nothing about models;
// it guarantees that what Load returns is byte for byte what Save was given.
//
// Stores are opened by URL with [Open]: a plain path or file:///abs/dir is a
// directory store ([Dir]); s3://bucket/prefix is reserved for the S3 store
// that arrives with the cluster work.
//
// # Directory layout
//
//	<dir>/
//	    latest                      name of the most recently saved checkpoint, one line
//	    epoch-000050/
//	        manifest.json           written last; see below
//	        weights.safetensors     one file per part, named after the part
//	        ema.safetensors
//	        ...
//	    epoch-000100/
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
//	  "name": "epoch-000050",
//	  "step": 12345,
//	  "epoch": 50,
//	  "time": "2025-01-02T03:04:05.123456789Z",
//	  "parts": [{"name": "weights.safetensors", "size": 7802636, "sha256": "9f86d0…"}]
//	}
//
// The directory name is authoritative for a checkpoint's name. List shows
// only directories with a usable manifest; Latest also warns about those
// whose manifest.json exists but is damaged. A directory without a
// manifest.json is not a checkpoint and is ignored.
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
// # Resuming
//
// [Store.Latest] loads the checkpoint that latest names, verifying every
// part. If the pointer is missing, or names a checkpoint that is missing,
// truncated, corrupt or unreadable, it reports why as a warning and falls back
// to the newest valid checkpoint in [Store.List] order (highest step, then
// newest time). With no valid checkpoint it returns [ErrNotFound].
//
// # Concurrency
//
// A Dir may be used from many goroutines: Load, List, Latest and Verify run
// concurrently with each other and with Save; Save, Delete and Prune are
// serialised. One process should write to a directory at a time (the
// coordinator); any number may read it. A Load racing a Delete or a
// replacement of the same name may fail; it never returns mixed data.
package checkpoint
