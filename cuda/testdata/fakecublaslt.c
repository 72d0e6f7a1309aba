// A fake libcublasLt.so for tests, to go with fakecublas.c: tinct only
// looks for cuBLASLt (and loads it before cuBLAS), so it has the one
// symbol that recognises it. Records: fakecuda.c.
#define FAKE_RECORD_ONLY
#include "fakecuda.c"

int cublasLtCreate(uintptr_t *h) {
	fake_line l;
	fake_begin(&l, "cublasLtCreate");
	if (!h)
		return fake_end(&l, fake_violation("cublasLtCreate", 7, "NULL handle"));
	*h = 0x17000001;
	return fake_end(&l, 0);
}
