#include "textflag.h"

// func siluSaveAVX2(x, y *float32, n int)
// For n (a multiple of 8) elements: s = σ(v) = 1/(1+e^t), t = clamp(−v, −87, 88),
// e^t as in expNormal; x[i] = s, y[i] = v·s.
// siluConsts rows (32 bytes each): 0 lo, 1 hi, 2 log2e, 3 magic, 4 ln2hi,
// 5 ln2lo, 6..11 polynomial, 12 one.
TEXT ·siluSaveAVX2(SB), NOSPLIT, $0-24
	MOVQ x+0(FP), SI
	MOVQ y+8(FP), DI
	MOVQ n+16(FP), CX
	LEAQ ·siluConsts(SB), R8
	VMOVUPS 0(R8), Y8    // lo
	VMOVUPS 32(R8), Y9   // hi
	VMOVUPS 64(R8), Y10  // log2e
	VMOVUPS 96(R8), Y11  // magic
	VMOVUPS 384(R8), Y12 // one
	VMOVUPS 384(R8), Y13 // bits of 1.0 = 127<<23
loop:
	CMPQ CX, $8
	JLT done
	VMOVUPS (SI), Y0          // v
	VXORPS Y1, Y1, Y1
	VSUBPS Y0, Y1, Y1         // t = −v
	VMAXPS Y8, Y1, Y1         // t = max(t, −87)
	VMINPS Y9, Y1, Y1         // t = min(t, 88)
	VMOVAPS Y11, Y2
	VFMADD231PS Y10, Y1, Y2   // kf = t·log2e + magic
	VSUBPS Y11, Y2, Y3        // k = kf − magic
	VPSLLD $23, Y2, Y4        // k<<23 (the magic's bits shift out)
	VPADDD Y13, Y4, Y4        // 2^k = (k+127)<<23
	VFNMADD231PS 128(R8), Y3, Y1 // r = t − k·ln2hi
	VFNMADD231PS 160(R8), Y3, Y1 // r −= k·ln2lo
	VMOVUPS 192(R8), Y5       // p = c0
	VFMADD213PS 224(R8), Y1, Y5 // p = p·r + c1
	VFMADD213PS 256(R8), Y1, Y5
	VFMADD213PS 288(R8), Y1, Y5
	VFMADD213PS 320(R8), Y1, Y5
	VFMADD213PS 352(R8), Y1, Y5
	VMULPS Y1, Y1, Y6         // r²
	VFMADD213PS Y1, Y6, Y5    // p·r² + r
	VADDPS Y12, Y5, Y5        // + 1
	VMULPS Y4, Y5, Y5         // e^t
	VADDPS Y12, Y5, Y5        // 1 + e^t
	VDIVPS Y5, Y12, Y7        // s = 1/(1+e^t)
	VMULPS Y7, Y0, Y0         // v·s
	VMOVUPS Y7, (SI)
	VMOVUPS Y0, (DI)
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JMP loop
done:
	VZEROUPPER
	RET
