// The shim's driver: reads launches from stdin, runs them, writes the
// buffers back to stdout. A request: u32 buffer count; per buffer u64
// float count and the floats; u32 name length and name; grid and block as
// 6 u32; u32 argument count; per argument u8 kind (0 buffer: u32 index, u64
// offset in floats; 1 int: i32; 2 float: f32). The reply: u32 status (0 ok,
// 1 unknown kernel), then every buffer's floats.

struct ShimArg { int kind; uint32_t buf; uint64_t off; int32_t i; float f; };
static std::vector<std::vector<float>> shim_bufs;
static std::vector<ShimArg> shim_args;

static float* F(int k) { return shim_bufs[shim_args[k].buf].data() + shim_args[k].off; }
static double* D(int k) { return (double*)F(k); }
static int I(int k) { return shim_args[k].i; }
static float R(int k) { return shim_args[k].f; }

static bool shim_dispatch(const std::string& name, dim3 g, dim3 b);

template <class T> static bool get(T* v) { return fread(v, sizeof(T), 1, stdin) == 1; }

int main() {
	for (;;) {
		uint32_t nb;
		if (!get(&nb)) return 0;
		shim_bufs.assign(nb, {});
		for (uint32_t i = 0; i < nb; i++) {
			uint64_t n;
			get(&n);
			shim_bufs[i].resize(n + 2); // slack: a double view of an odd tail
			if (n && fread(shim_bufs[i].data(), 4, n, stdin) != n) return 2;
			shim_bufs[i].resize(n);
		}
		uint32_t len;
		get(&len);
		std::string name(len, ' ');
		if (fread(&name[0], 1, len, stdin) != len) return 2;
		uint32_t d[6];
		for (auto& x : d) get(&x);
		uint32_t na;
		get(&na);
		shim_args.assign(na, {});
		for (auto& a : shim_args) {
			uint8_t k;
			get(&k);
			a.kind = k;
			if (k == 0) { get(&a.buf); get(&a.off); }
			else if (k == 1) get(&a.i);
			else get(&a.f);
		}
		uint32_t status = shim_dispatch(name, dim3{d[0], d[1], d[2]}, dim3{d[3], d[4], d[5]}) ? 0 : 1;
		fwrite(&status, 4, 1, stdout);
		for (auto& buf : shim_bufs) fwrite(buf.data(), 4, buf.size(), stdout);
		fflush(stdout);
	}
}
