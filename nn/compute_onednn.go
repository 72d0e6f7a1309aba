package nn

import (
	"fmt"
	"os"
	"runtime"
	"strconv"
	"unsafe"
)

// oneDNNCompute runs 3×3 convolutions (forward, backward-data,
// backward-weights with bias) as oneDNN primitives and every other
// operation on the reference kernels it embeds (see useDNNL).
//
// Each convolution lets oneDNN choose its layouts (format "any": on AVX-512,
// nChw16c activations and blocked weights for its JIT kernels) and its
// algorithm (Winograd where it has one, else direct), and reorders the
// tensors it is given in and out around it: NCHW views of the
// concatenations, or nChw16c tensors (Tensor.Blocked) that need no reorder.
// The residual add rides on the output reorder (a sum post-op), as do the
// weight gradients' accumulation. The batch goes through in chunks of
// images (dnnlChunkBytes). Primitives and their memory objects are created
// once per shape and kept; the internal buffers are shared by all
// operations of the instance, grown to the largest request.
type oneDNNCompute struct {
	kernels
	d      *dnnlAPI
	stream uintptr
	convs  map[convKey]*convPrims
	slots  [numDnnlSlots][]float32
	// allConvs runs 1×1 convolutions on oneDNN too (tests)
	allConvs bool
	// chunkImages, when set, is the images per primitive call (tests)
	chunkImages int
	// plain keeps every activation NCHW ($TINCT_DNNL_PLAIN, for measuring)
	plain bool
	// noWinograd: direct convolutions only ($TINCT_DNNL_WINOGRAD=0)
	noWinograd bool
	// the library's objects this instance made, destroyed by free
	prims, mems []uintptr
}

const (
	slotSrc     = iota // src or diff_src in the primitive's layout
	slotDst            // dst or diff_dst in the primitive's layout
	slotWei            // weights in the primitive's layout
	slotDiffWei        // diff_weights in the primitive's layout
	slotBias           // diff_bias
	slotPad            // scratchpad
	numDnnlSlots
)

func newOneDNN(d *dnnlAPI) *oneDNNCompute {
	o := &oneDNNCompute{d: d, stream: d.newStream(), convs: map[convKey]*convPrims{}, plain: os.Getenv("TINCT_DNNL_PLAIN") != "",
		noWinograd: os.Getenv("TINCT_DNNL_WINOGRAD") == "0"}
	// An arena that is dropped (a sampler made for one preview, say) takes
	// its instance with it; the library's objects go with the instance.
	runtime.SetFinalizer(o, (*oneDNNCompute).free)
	return o
}

// free destroys the primitives, memory objects and stream of an instance
// nothing refers to any more.
func (o *oneDNNCompute) free() {
	if o.stream == 0 {
		return
	}
	runtime.SetFinalizer(o, nil)
	for _, p := range o.prims {
		o.d.primDestroy(p)
	}
	for _, m := range o.mems {
		o.d.memDestroy(m)
	}
	o.d.streamDestroy(o.stream)
	o.stream, o.prims, o.mems, o.convs = 0, nil, nil, nil
}

// Close destroys the library's objects and drops the scratch.
func (o *oneDNNCompute) Close() {
	o.free()
	o.kernels.Close()
	o.slots = [numDnnlSlots][]float32{}
}

func (o *oneDNNCompute) Name() string {
	return "onednn (" + o.d.VersionString() + " primitives for convolutions; go kernels for the rest)"
}

// ActivationBlock: the blocked layout oneDNN's convolutions run in on this
// CPU (dnnlBlock), so that a block's conv1 output, SiLU and conv2 input
// need no reorders.
func (o *oneDNNCompute) ActivationBlock(c int) int {
	if c%dnnlBlock == 0 && !o.plain {
		return dnnlBlock
	}
	return 0
}

// dnnlBlock is the channel block of the layout oneDNN 2.6's JIT
// convolutions choose for float32 activations: nChw16c on AVX-512, nChw8c
// below (AVX2, AVX, SSE 4.1). Given the other one, every convolution reorders
// its input and output to its own (measured on an AVX2 machine: 4 reorders
// a 3×3 layer, DNNL_VERBOSE=1).
var dnnlBlock = func() int {
	if hasAVX512() {
		return 16
	}
	return 8
}()

func (o *oneDNNCompute) Bytes() int {
	n := o.kernels.Bytes()
	for _, s := range o.slots {
		n += 4 * cap(s)
	}
	return n
}

// slot returns the instance's buffer for slot s with at least bytes bytes,
// 64-byte aligned.
func (o *oneDNNCompute) slot(s, bytes int) unsafe.Pointer {
	n := (bytes+3)/4 + 16
	if len(o.slots[s]) < n {
		o.slots[s] = make([]float32, n)
	}
	p := unsafe.Pointer(&o.slots[s][0])
	off := (64 - uintptr(p)%64) % 64
	return unsafe.Add(p, off)
}

// dnnlStep is one primitive with its argument memory objects; run points
// them at buffers.
type dnnlStep struct {
	prim     uintptr
	args     []dnnlExecArg
	padBytes int
}

func (o *oneDNNCompute) step(pd uintptr, kinds []int32, mds []dnnlMD) *dnnlStep {
	d := o.d
	s := &dnnlStep{prim: d.primitive(pd)}
	o.prims = append(o.prims, s.prim)
	for i, k := range kinds {
		s.args = append(s.args, dnnlExecArg{arg: k, mem: d.memory(&mds[i])})
	}
	pad := d.queryMD(pd, dnnlQueryScratchpadMD)
	if s.padBytes = d.size(&pad); s.padBytes > 0 {
		s.args = append(s.args, dnnlExecArg{arg: dnnlArgScratchpad, mem: d.memory(&pad)})
	}
	for _, a := range s.args {
		o.mems = append(o.mems, a.mem)
	}
	return s
}

// run sets the step's buffers (in the order of its arguments) and runs it.
func (o *oneDNNCompute) run(s *dnnlStep, bufs ...unsafe.Pointer) {
	d := o.d
	for i, b := range bufs {
		d.check("memory_set_data_handle", d.memSetHandle(s.args[i].mem, b))
	}
	if s.padBytes > 0 {
		d.check("memory_set_data_handle", d.memSetHandle(s.args[len(bufs)].mem, o.slot(slotPad, s.padBytes)))
	}
	d.run(o.stream, s.prim, s.args)
}

// reorder makes the step that copies src into the layout of dst, adding to
// what dst holds when accumulate is set; nil when the layouts are equal and
// nothing is to be added.
func (o *oneDNNCompute) reorder(src, dst dnnlMD, accumulate bool) *dnnlStep {
	d := o.d
	if !accumulate && d.same(&src, &dst) {
		return nil
	}
	var post func(uintptr)
	if accumulate {
		post = func(po uintptr) { d.check("post_ops_append_sum", d.postOpsSum(po, 1)) }
	}
	var pd uintptr
	attr := d.attr(post)
	st := d.reorderPD(&pd, &src, d.engine, &dst, d.engine, attr)
	d.attrDestroy(attr)
	if st != dnnlSuccess {
		panic("nn: " + dnnlError("reorder_primitive_desc_create", st).Error())
	}
	defer d.pdDestroy(pd)
	return o.step(pd, []int32{dnnlArgSrc, dnnlArgDst}, []dnnlMD{src, dst})
}

type convKey struct {
	n, in, out, h, w, k int
	xStride, yStride    int // per-image strides of the two activations
	xBlocked, yBlocked  int // and their layouts
	accumulate          bool
	backward            bool
	silu                bool // forward with a SiLU post-op (inference)
}

// convPrims is one convolution shape's primitives. Forward: reorder x and
// the weights in, convolve with bias, reorder y out (adding, for the
// residual). Backward: reorder x and dy in, backward-weights (diff weights
// added to GradW by its reorder out, diff bias added in Go), then
// backward-data with the weights reordered for it and dx reordered out.
type convPrims struct {
	// layouts the primitives chose
	src, dst, wei         dnnlMD
	xIn, wIn, yOut, conv  *dnnlStep
	dyIn, bwdW, dwOut     *dnnlStep
	bwdWei, bwdDiffDst    dnnlMD
	bwdWIn, dyInD, bwdD   *dnnlStep
	dxOut                 *dnnlStep
	srcBytes, dstBytes    int
	weiBytes, diffWBytes  int
	bwdWeiBytes, diffDstB int
	impl                  string
	siluAfter             bool // a SiLU asked for that the primitive could not fuse
}

// convAlgs are the convolution algorithms tried, in order: Winograd
// (F(4×4, 3×3), which oneDNN has for AVX-512 and channels in multiples of
// 16: 2.25× fewer multiplications, at a small cost in rounding) unless
// $TINCT_DNNL_WINOGRAD=0, then direct.
func (o *oneDNNCompute) convAlgs() []int32 {
	if o.noWinograd {
		return []int32{dnnlConvolutionDirect}
	}
	return []int32{dnnlConvolutionWinograd, dnnlConvolutionDirect}
}

// convPD creates the primitive descriptor of the first algorithm init
// accepts and oneDNN implements. post, when set, appends post-ops; an
// algorithm that has no kernel with them is taken without them in
// preference to the next algorithm (oneDNN 2.6's Winograd takes no SiLU
// post-op, and is faster unfused than direct fused), and fused says which.
func (o *oneDNNCompute) convPD(what string, init func(alg int32, desc *dnnlOpDesc) int32, hint uintptr, post func(po uintptr)) (pd uintptr, fused bool) {
	var last int32
	for _, alg := range o.convAlgs() {
		var desc dnnlOpDesc
		if last = init(alg, &desc); last != dnnlSuccess {
			continue
		}
		attrs := []func(uintptr){post}
		if post != nil {
			attrs = append(attrs, nil) // the same algorithm, unfused
		}
		for _, p := range attrs {
			attr := o.d.attr(p)
			last = o.d.pdCreate(&pd, &desc, attr, o.d.engine, hint)
			o.d.attrDestroy(attr)
			if last == dnnlSuccess {
				return pd, p != nil
			}
		}
	}
	panic("nn: " + dnnlError(what, last).Error())
}

func (o *oneDNNCompute) convPrims(c *Conv2D, x, y Tensor, accumulate, backward, silu bool) *convPrims {
	key := convKey{x.N, c.In, c.Out, x.H, x.W, c.K, x.Stride, y.Stride, x.Blocked, y.Blocked, accumulate, backward, silu}
	if p := o.convs[key]; p != nil {
		return p
	}
	d := o.d
	defer d.unpin(d.pin())
	p := &convPrims{}
	userX, userY := d.mdOf(x), d.mdOf(y)
	userW := d.mdTag(dnnlTagABCD, c.Out, c.In, c.K, c.K)
	bias := d.mdTag(dnnlTagA, c.Out)

	pp := int64(c.K / 2)
	strides, pad := dnnlDims{1, 1}, dnnlDims{pp, pp}
	any4 := func(a, b, h, w int) *dnnlMD { md := d.mdTag(dnnlTagAny, a, b, h, w); return &md }
	var post func(po uintptr)
	if silu { // swish with α = 1: x·σ(x)
		post = func(po uintptr) { d.check("post_ops_append_eltwise", d.postOpsEltwise(po, 1, dnnlEltwiseSwish, 1, 0)) }
	}
	fwd, fused := o.convPD("convolution forward", func(alg int32, desc *dnnlOpDesc) int32 {
		return d.convFwdInit(desc, dnnlForwardTraining, alg, any4(x.N, c.In, x.H, x.W), any4(c.Out, c.In, c.K, c.K),
			&bias, any4(y.N, c.Out, y.H, y.W), &strides[0], &pad[0], &pad[0])
	}, 0, post)
	defer d.pdDestroy(fwd)
	p.siluAfter = silu && !fused
	p.src, p.wei, p.dst = d.queryMD(fwd, dnnlQuerySrcMD), d.queryMD(fwd, dnnlQueryWeightsMD), d.queryMD(fwd, dnnlQueryDstMD)
	p.srcBytes, p.dstBytes, p.weiBytes = d.size(&p.src), d.size(&p.dst), d.size(&p.wei)
	p.impl = d.implInfo(fwd)
	p.xIn = o.reorder(userX, p.src, false)
	p.wIn = o.reorder(userW, p.wei, false)
	if !backward {
		p.conv = o.step(fwd, []int32{dnnlArgSrc, dnnlArgWeights, dnnlArgBias, dnnlArgDst}, []dnnlMD{p.src, p.wei, bias, p.dst})
		p.yOut = o.reorder(p.dst, userY, accumulate)
		if p.yOut == nil && accumulate { // cannot happen: reorder adds
			panic("nn: oneDNN convolution: accumulate without a reorder")
		}
		o.convs[key] = p
		return p
	}

	// backward weights: src, diff_dst in → diff_weights, diff_bias out
	bwPD, _ := o.convPD("convolution backward weights", func(alg int32, desc *dnnlOpDesc) int32 {
		return d.convBwdWInit(desc, alg, any4(x.N, c.In, x.H, x.W), any4(c.Out, c.In, c.K, c.K), &bias,
			any4(y.N, c.Out, y.H, y.W), &strides[0], &pad[0], &pad[0])
	}, fwd, nil)
	defer d.pdDestroy(bwPD)
	bwSrc, bwDiffW, bwDiffDst := d.queryMD(bwPD, dnnlQuerySrcMD), d.queryMD(bwPD, dnnlQueryDiffWeightsMD), d.queryMD(bwPD, dnnlQueryDiffDstMD)
	p.src = bwSrc
	p.srcBytes = d.size(&bwSrc)
	p.xIn = o.reorder(userX, bwSrc, false)
	p.dst = bwDiffDst
	p.dstBytes = d.size(&bwDiffDst)
	p.dyIn = o.reorder(userY, bwDiffDst, false)
	p.diffWBytes = d.size(&bwDiffW)
	p.bwdW = o.step(bwPD, []int32{dnnlArgSrc, dnnlArgDiffDst, dnnlArgDiffWeights, dnnlArgDiffBias}, []dnnlMD{bwSrc, bwDiffDst, bwDiffW, bias})
	p.dwOut = o.reorder(bwDiffW, userW, true)

	// backward data: diff_dst, weights in → diff_src out
	bdPD, _ := o.convPD("convolution backward data", func(alg int32, desc *dnnlOpDesc) int32 {
		return d.convBwdDataInit(desc, alg, any4(x.N, c.In, x.H, x.W), any4(c.Out, c.In, c.K, c.K),
			any4(y.N, c.Out, y.H, y.W), &strides[0], &pad[0], &pad[0])
	}, fwd, nil)
	defer d.pdDestroy(bdPD)
	bdDiffSrc, bdWei, bdDiffDst := d.queryMD(bdPD, dnnlQueryDiffSrcMD), d.queryMD(bdPD, dnnlQueryWeightsMD), d.queryMD(bdPD, dnnlQueryDiffDstMD)
	p.bwdWei, p.bwdDiffDst = bdWei, bdDiffDst
	p.bwdWeiBytes, p.diffDstB = d.size(&bdWei), d.size(&bdDiffDst)
	p.bwdWIn = o.reorder(userW, bdWei, false)
	if !d.same(&bdDiffDst, &bwDiffDst) {
		p.dyInD = o.reorder(userY, bdDiffDst, false)
		if p.dyInD == nil {
			p.dyInD = &dnnlStep{} // user layout: marker, see ConvBackward
		}
	}
	p.bwdD = o.step(bdPD, []int32{dnnlArgDiffDst, dnnlArgWeights, dnnlArgDiffSrc}, []dnnlMD{bdDiffDst, bdWei, bdDiffSrc})
	p.dxOut = o.reorder(bdDiffSrc, userX, accumulate)
	// diff_src may land in a layout of its own size
	p.srcBytes = max(p.srcBytes, d.size(&bdDiffSrc))
	o.convs[key] = p
	return p
}

func ptr(t []float32) unsafe.Pointer { return unsafe.Pointer(unsafe.SliceData(t)) }

// Which convolutions run on oneDNN was chosen by measurement
// (BenchmarkConv, every layer of the 128² network at batch 1 and 8, in
// docs/benchmarks-history.md, "Per layer"): its 3×3 kernels beat im2col+GEMM by 10–40% even with
// the reorders in and out, while a 1×1 convolution is a plain GEMM on NCHW
// that the reorders only slow down. So 1×1 layers stay on the kernels.
func (o *oneDNNCompute) useDNNL(c *Conv2D) bool { return c.K == 3 || o.allConvs }

// dnnlChunkBytes caps the activations one primitive call reorders: the
// batch is convolved in chunks of images so that the blocked copies stay
// small next to the arena (peak memory) and closer to the caches.
var dnnlChunkBytes = func() int {
	if v, err := strconv.Atoi(os.Getenv("TINCT_DNNL_CHUNK")); err == nil && v > 0 {
		return v
	}
	return 8 << 20
}()

// chunk is how many images of x (and of the wider of x, y) go in one call.
func (o *oneDNNCompute) chunk(c *Conv2D, x Tensor) int {
	if o.chunkImages > 0 {
		return o.chunkImages
	}
	per := 4 * max(c.In, c.Out) * x.HW()
	return max(1, min(x.N, dnnlChunkBytes/per))
}

// images is the view of images [lo,hi) of t (nil data stays nil).
func images(t Tensor, lo, hi int) Tensor {
	if t.Data == nil {
		return t
	}
	v := t
	v.N = hi - lo
	v.Data = t.Data[lo*t.Stride:]
	return v
}

func (o *oneDNNCompute) ConvForward(c *Conv2D, x, y Tensor, accumulate bool) {
	if !o.useDNNL(c) {
		o.kernels.ConvForward(c, x, y, accumulate)
		return
	}
	o.convForwardAll(c, x, y, accumulate, false)
}

// ConvSiLUForward runs the SiLU as the convolution primitive's post-op
// where its algorithm takes one (direct), else after it on each chunk's
// output (Winograd, which oneDNN 2.6 runs with no post-ops; see convPD).
func (o *oneDNNCompute) ConvSiLUForward(c *Conv2D, x, y Tensor) {
	if !o.useDNNL(c) {
		o.kernels.ConvSiLUForward(c, x, y)
		return
	}
	o.convForwardAll(c, x, y, false, true)
}

func (o *oneDNNCompute) convForwardAll(c *Conv2D, x, y Tensor, accumulate, silu bool) {
	c.checkShape("forward", x, y)
	nb := o.chunk(c, x)
	var wei *dnnlMD // the layout the weights were reordered to for this call
	for lo := 0; lo < x.N; lo += nb {
		hi := min(lo+nb, x.N)
		o.convForward(c, images(x, lo, hi), images(y, lo, hi), accumulate, silu, &wei)
	}
}

func (o *oneDNNCompute) ConvBackward(c *Conv2D, x, dy, dx Tensor, accumulate bool) {
	if !o.useDNNL(c) {
		o.kernels.ConvBackward(c, x, dy, dx, accumulate)
		return
	}
	c.checkShape("backward", x, dy)
	if dx.Data != nil {
		c.checkShape("input gradient", dx, dy)
		if dx.Stride != x.Stride || dx.Blocked != x.Blocked {
			// x and dx share one user layout in the primitives
			panic(fmt.Sprintf("nn: oneDNN convolution backward: x stride %d, dx stride %d", x.Stride, dx.Stride))
		}
	}
	nb := o.chunk(c, x)
	var wei *dnnlMD
	for lo := 0; lo < x.N; lo += nb {
		hi := min(lo+nb, x.N)
		o.convBackward(c, images(x, lo, hi), images(dy, lo, hi), images(dx, lo, hi), accumulate, &wei)
	}
}

// reorderWeights runs the reorder of c's weights into the weights slot in
// layout md, unless the call's previous chunk left them there (*done).
func (o *oneDNNCompute) reorderWeights(c *Conv2D, r *dnnlStep, md *dnnlMD, bytes int, done **dnnlMD) unsafe.Pointer {
	wei := o.slot(slotWei, bytes)
	if *done == nil || !o.d.same(*done, md) {
		o.run(r, ptr(c.Weight), wei)
		*done = md
	}
	return wei
}

func (o *oneDNNCompute) convForward(c *Conv2D, x, y Tensor, accumulate, silu bool, weiDone **dnnlMD) {
	p := o.convPrims(c, x, y, accumulate, false, silu)
	src, wei, dst := ptr(x.Data), ptr(c.Weight), ptr(y.Data)
	if p.xIn != nil {
		src = o.slot(slotSrc, p.srcBytes)
		o.run(p.xIn, ptr(x.Data), src)
	}
	if p.wIn != nil {
		wei = o.reorderWeights(c, p.wIn, &p.wei, p.weiBytes, weiDone)
	}
	if p.yOut != nil {
		dst = o.slot(slotDst, p.dstBytes)
	}
	o.run(p.conv, src, wei, ptr(c.Bias), dst)
	if p.yOut != nil {
		o.run(p.yOut, dst, ptr(y.Data))
	}
	if p.siluAfter {
		siluInPlace(y)
	}
	runtime.KeepAlive(x.Data)
	runtime.KeepAlive(y.Data)
	runtime.KeepAlive(c.Weight)
	runtime.KeepAlive(c.Bias)
}

func (o *oneDNNCompute) convBackward(c *Conv2D, x, dy, dx Tensor, accumulate bool, weiDone **dnnlMD) {
	p := o.convPrims(c, x, dy, accumulate, true, false)
	src, diffDst := ptr(x.Data), ptr(dy.Data)
	if p.xIn != nil {
		src = o.slot(slotSrc, p.srcBytes)
		o.run(p.xIn, ptr(x.Data), src)
	}
	if p.dyIn != nil {
		diffDst = o.slot(slotDst, p.dstBytes)
		o.run(p.dyIn, ptr(dy.Data), diffDst)
	}
	dw := o.slot(slotDiffWei, p.diffWBytes)
	db := o.slot(slotBias, 4*c.Out)
	o.run(p.bwdW, src, diffDst, dw, db)
	if p.dwOut != nil {
		o.run(p.dwOut, dw, ptr(c.GradW))
	}
	axpy(1, unsafe.Slice((*float32)(db), c.Out), c.GradB)
	if dx.Data != nil {
		wei := ptr(c.Weight)
		if p.bwdWIn != nil {
			wei = o.reorderWeights(c, p.bwdWIn, &p.bwdWei, p.bwdWeiBytes, weiDone)
		}
		if p.dyInD != nil {
			diffDst = ptr(dy.Data)
			if p.dyInD.prim != 0 {
				diffDst = o.slot(slotDst, p.diffDstB)
				o.run(p.dyInD, ptr(dy.Data), diffDst)
			}
		}
		diffSrc := ptr(dx.Data)
		if p.dxOut != nil {
			diffSrc = o.slot(slotSrc, p.srcBytes)
		}
		o.run(p.bwdD, diffDst, wei, diffSrc)
		if p.dxOut != nil {
			o.run(p.dxOut, diffSrc, ptr(dx.Data))
		}
	}
	runtime.KeepAlive(x.Data)
	runtime.KeepAlive(dy.Data)
	runtime.KeepAlive(dx.Data)
	runtime.KeepAlive(c.Weight)
	runtime.KeepAlive(c.GradW)
	runtime.KeepAlive(c.GradB)
}
