#include "textflag.h"

// BatchNorm's per-plane loops, eight floats at a time (AVX2, FMA). Each
// takes n, a multiple of 16 (bnApply, bnBack: of 8); the Go wrappers in
// bn_amd64.go do the tails.

// func bnApplyAVX2(x, y *float32, n int, mu, is float32)
// y[i] = (x[i] − mu)·is
TEXT ·bnApplyAVX2(SB), NOSPLIT, $0-32
	MOVQ x+0(FP), SI
	MOVQ y+8(FP), DI
	MOVQ n+16(FP), CX
	VBROADCASTSS mu+24(FP), Y8
	VBROADCASTSS is+28(FP), Y9
apply:
	CMPQ CX, $8
	JLT applied
	VMOVUPS (SI), Y0
	VSUBPS Y8, Y0, Y0
	VMULPS Y9, Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ $32, SI
	ADDQ $32, DI
	SUBQ $8, CX
	JMP apply
applied:
	VZEROUPPER
	RET

// func sumSqDevAVX2(x *float32, n int, mu float32) float32
// Σ (x[i] − mu)², two vector accumulators.
TEXT ·sumSqDevAVX2(SB), NOSPLIT, $0-28
	MOVQ x+0(FP), SI
	MOVQ n+8(FP), CX
	VBROADCASTSS mu+16(FP), Y8
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
sq:
	CMPQ CX, $16
	JLT sqdone
	VMOVUPS (SI), Y2
	VMOVUPS 32(SI), Y3
	VSUBPS Y8, Y2, Y2
	VSUBPS Y8, Y3, Y3
	VFMADD231PS Y2, Y2, Y0
	VFMADD231PS Y3, Y3, Y1
	ADDQ $64, SI
	SUBQ $16, CX
	JMP sq
sqdone:
	VADDPS Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	MOVSS X0, ret+24(FP)
	VZEROUPPER
	RET

// func dotDevAVX2(dy, x *float32, n int, mu float32) (float32, float32)
// Σ g[i] and Σ g[i]·(x[i] − mu), two vector accumulators each.
TEXT ·dotDevAVX2(SB), NOSPLIT, $0-40
	MOVQ dy+0(FP), SI
	MOVQ x+8(FP), DI
	MOVQ n+16(FP), CX
	VBROADCASTSS mu+24(FP), Y8
	VXORPS Y0, Y0, Y0
	VXORPS Y1, Y1, Y1
	VXORPS Y2, Y2, Y2
	VXORPS Y3, Y3, Y3
dot:
	CMPQ CX, $16
	JLT dotdone
	VMOVUPS (SI), Y4
	VMOVUPS 32(SI), Y5
	VMOVUPS (DI), Y6
	VMOVUPS 32(DI), Y7
	VADDPS Y4, Y0, Y0
	VADDPS Y5, Y1, Y1
	VSUBPS Y8, Y6, Y6
	VSUBPS Y8, Y7, Y7
	VFMADD231PS Y6, Y4, Y2
	VFMADD231PS Y7, Y5, Y3
	ADDQ $64, SI
	ADDQ $64, DI
	SUBQ $16, CX
	JMP dot
dotdone:
	VADDPS Y1, Y0, Y0
	VEXTRACTF128 $1, Y0, X1
	VADDPS X1, X0, X0
	VHADDPS X0, X0, X0
	VHADDPS X0, X0, X0
	MOVSS X0, ret+32(FP)
	VADDPS Y3, Y2, Y2
	VEXTRACTF128 $1, Y2, X3
	VADDPS X3, X2, X2
	VHADDPS X2, X2, X2
	VHADDPS X2, X2, X2
	MOVSS X2, ret1+36(FP)
	VZEROUPPER
	RET

// func bnBackAVX2(dy, x, out *float32, n int, is, mdy, mu, k float32, acc bool)
// out[i] (+)= is·(g[i] − mdy − (x[i] − mu)·k)
TEXT ·bnBackAVX2(SB), NOSPLIT, $0-49
	MOVQ dy+0(FP), SI
	MOVQ x+8(FP), DI
	MOVQ out+16(FP), DX
	MOVQ n+24(FP), CX
	VBROADCASTSS is+32(FP), Y8
	VBROADCASTSS mdy+36(FP), Y9
	VBROADCASTSS mu+40(FP), Y10
	VBROADCASTSS k+44(FP), Y11
	MOVBLZX acc+48(FP), AX
back:
	CMPQ CX, $8
	JLT backdone
	VMOVUPS (DI), Y0
	VSUBPS Y10, Y0, Y0        // x − mu
	VMOVUPS (SI), Y1
	VSUBPS Y9, Y1, Y1         // g − mdy
	VFNMADD231PS Y11, Y0, Y1  // − (x − mu)·k
	VMULPS Y8, Y1, Y1         // · is
	TESTQ AX, AX
	JZ store
	VADDPS (DX), Y1, Y1
store:
	VMOVUPS Y1, (DX)
	ADDQ $32, SI
	ADDQ $32, DI
	ADDQ $32, DX
	SUBQ $8, CX
	JMP back
backdone:
	VZEROUPPER
	RET
