#include "textflag.h"

// Adam and the EMA, eight floats at a time, with the operations of the Go
// loops in the same order and no fused multiply-adds, so that the results
// are bitwise those of adamGo and emaGo.

// func adamAVX(p, gr, m, v *float32, n int, c *[7]float32)
TEXT ·adamAVX(SB), NOSPLIT, $0-48
	MOVQ p+0(FP), DI
	MOVQ gr+8(FP), SI
	MOVQ m+16(FP), R8
	MOVQ v+24(FP), R9
	MOVQ n+32(FP), CX
	MOVQ c+40(FP), AX
	VBROADCASTSS 0(AX), Y8   // b1
	VBROADCASTSS 4(AX), Y9   // 1−b1
	VBROADCASTSS 8(AX), Y10  // b2
	VBROADCASTSS 12(AX), Y11 // 1−b2
	VBROADCASTSS 16(AX), Y12 // bc2Sqrt
	VBROADCASTSS 20(AX), Y13 // eps
	VBROADCASTSS 24(AX), Y14 // stepSize
adam:
	CMPQ CX, $8
	JLT adamdone
	VMOVUPS (SI), Y0          // g
	VMOVUPS (R8), Y1          // m
	VMULPS Y8, Y1, Y1         // m·b1
	VMULPS Y9, Y0, Y2         // g·(1−b1)
	VADDPS Y2, Y1, Y1
	VMOVUPS Y1, (R8)
	VMOVUPS (R9), Y3          // v
	VMULPS Y10, Y3, Y3        // v·b2
	VMULPS Y0, Y0, Y4         // g·g
	VMULPS Y11, Y4, Y4        // ·(1−b2)
	VADDPS Y4, Y3, Y3
	VMOVUPS Y3, (R9)
	VSQRTPS Y3, Y5
	VDIVPS Y12, Y5, Y5        // √v/bc2Sqrt
	VADDPS Y13, Y5, Y5        // + eps
	VMULPS Y1, Y14, Y6        // stepSize·m
	VDIVPS Y5, Y6, Y6         // / denom
	VMOVUPS (DI), Y7
	VSUBPS Y6, Y7, Y7
	VMOVUPS Y7, (DI)
	ADDQ $32, DI
	ADDQ $32, SI
	ADDQ $32, R8
	ADDQ $32, R9
	SUBQ $8, CX
	JMP adam
adamdone:
	VZEROUPPER
	RET

// func emaAVX(avg, live *float32, n int, d, oneMinusD float32)
TEXT ·emaAVX(SB), NOSPLIT, $0-32
	MOVQ avg+0(FP), DI
	MOVQ live+8(FP), SI
	MOVQ n+16(FP), CX
	VBROADCASTSS d+24(FP), Y8
	VBROADCASTSS oneMinusD+28(FP), Y9
ema:
	CMPQ CX, $8
	JLT emadone
	VMOVUPS (DI), Y0
	VMULPS Y8, Y0, Y0         // d·avg
	VMOVUPS (SI), Y1
	VMULPS Y9, Y1, Y1         // (1−d)·live
	VADDPS Y1, Y0, Y0
	VMOVUPS Y0, (DI)
	ADDQ $32, DI
	ADDQ $32, SI
	SUBQ $8, CX
	JMP ema
emadone:
	VZEROUPPER
	RET
