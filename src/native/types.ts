// The one typed description of what the native addon (native/addon/*.cpp) exports.
// Only src/native/binding.ts loads the .node file; everything else imports these types.

/** Architectures the engine computes: the Llama family (llama, baichuan, baichuan2, qwen2) and Bloom. */
export type Arch = 'llama' | 'baichuan' | 'baichuan2' | 'qwen2' | 'bloom';

/** Shape and numerics of a model, as the engine needs them (derived from HF config.json). */
export interface NativeModelConfig {
  arch: Arch;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  /** RoPE base (unused by bloom, which has ALiBi). */
  ropeTheta: number;
  /** The norm epsilon: RMSNorm's rms_norm_eps, or LayerNorm's layer_norm_epsilon for bloom. */
  rmsNormEps: number;
  /** lm_head shares embed_tokens' matrix. */
  tieWordEmbeddings: boolean;
  /** q/k/v projections carry biases (Qwen2). */
  qkvBias: boolean;
  /** lm_head rows are L2-normalised before use (Baichuan2 NormHead). */
  normHead: boolean;
  /** Compute precision: f32; bf16 (bf16 weights and activations, fp32 masters, gradients and
   *  optimizer state, on either backend); f64 (cpu) exists for gradient checks in tests. */
  dtype?: 'f32' | 'f64' | 'bf16';
  /** Which backend computes (default cpu). */
  device?: Device;
  /** A model that only knows sizes and takes no memory: adapters attach and plan() measures, so a
   *  run's memory can be planned before any weight is read (and without a GPU). */
  meta?: boolean;
  /** Worker threads for the CPU backend (default: all cores). */
  threads?: number;
}

/** Where one checkpoint tensor lives on disk; the engine reads and converts the bytes itself. */
export interface TensorSource {
  /** HF name, e.g. "model.layers.0.self_attn.q_proj.weight" or "model.layers.0.self_attn.W_pack.weight". */
  name: string;
  file: string;
  /** Byte offset of the tensor's data from the start of the file. */
  offset: number;
  dtype: 'F32' | 'F16' | 'BF16';
  shape: number[];
}

export interface LoraOptions {
  /** Module names as PEFT spells them: q_proj k_proj v_proj o_proj gate_proj up_proj down_proj W_pack;
   *  bloom: query_key_value dense dense_h_to_4h dense_4h_to_h. */
  targets: string[];
  rank: number;
  alpha: number;
  dropout: number;
  /** Seeds A's kaiming-uniform init and the dropout masks. */
  seed: number;
  useRslora?: boolean;
}

export interface ParamInfo { name: string; shape: number[] }

export type Device = 'cpu' | 'cuda';

/** The run's memory, fixed once: activations for batch x seqLen (training: what backward needs), the
 *  optimizer state, a KV cache of kvSlots sequences of kvPositions. Training batches within it
 *  allocate nothing; a larger training batch is an error; inference beyond it grows the plan. */
export interface PlanRequest {
  batch?: number;
  seqLen?: number;
  train?: boolean;
  optimizer?: boolean;
  eightBit?: boolean;
  /** Paged AdamW: on a GPU the optimizer state lives in pinned host memory (the plan counts only its device pages). */
  paged?: boolean;
  kvSlots?: number;
  kvPositions?: number;
}

export type MemKind = 'weights' | 'trainable' | 'gradients' | 'optimizer' | 'activations' | 'workspace' | 'kv_cache';

/** Bytes per kind, with the largest buffers by name (at most 12 per kind; count = all of them). */
export interface MemoryPlan {
  device: Device;
  dtype: 'f32' | 'f64' | 'bf16';
  total: number;
  kinds: { kind: MemKind; bytes: number; count: number; entries: { name: string; bytes: number }[] }[];
}

export interface AdamWOptions {
  lr: number;
  beta1: number;
  beta2: number;
  eps: number;
  weightDecay: number;
  /** Global-norm clipping threshold; 0 or negative disables clipping. */
  maxGradNorm: number;
  /** 8-bit blockwise moments (bitsandbytes' 8-bit AdamW) for tensors of >= 4096 elements. */
  eightBit?: boolean;
  /** Paged AdamW (paged_adamw_32bit / _8bit): on a GPU the moments page from pinned host memory; same update. */
  paged?: boolean;
  /** fp16 loss scaling: the gradients are loss_scale x the true ones; they are multiplied by this
   *  (1 / loss_scale) before the norm, the clipping and the update (default 1). */
  inverseScale?: number;
}

export interface OptimizerState {
  step: number;
  /** 32-bit moments (m, v), or 8-bit blockwise ones (codes m8/v8 + per-256-block absmax); the other
   *  pair empty / absent. All empty before the first step. */
  tensors: { name: string; m: Float32Array; v: Float32Array; m8?: Uint8Array; v8?: Uint8Array; mAbsmax?: Float32Array; vAbsmax?: Float32Array }[];
}

export interface NativeModel {
  /** Base tensors the engine expects, with HF names and shapes. */
  baseParams(): ParamInfo[];
  /** Read the listed tensors from disk (async worker). Missing names -> rejected promise naming them;
   *  `partial`: more calls follow, the check for missing tensors waits for the last one. */
  loadWeights(sources: TensorSource[], opts?: { partial?: boolean }): Promise<void>;
  /** Attach LoRA adapters; base weights become frozen. Returns the new trainable tensors. */
  addLora(opts: LoraOptions): ParamInfo[];
  /** QLoRA: store every frozen linear weight (not embeddings, norms, lm_head) as NF4 with double
   *  quantization, one NF4 tensor per checkpoint tensor, as bitsandbytes does. Call after loadWeights. */
  quantize(opts: { bits: 4; doubleQuant?: boolean }): { bytesBefore: number; bytesAfter: number };
  /** Prompt tuning: `numVirtualTokens` trainable embeddings prepended to every sequence (never in the
   *  loss; logits() returns the real positions only). init: numVirtualTokens*hidden values, or
   *  absent for N(0, 1) from seed. Returns the new trainable tensor ("prompt_embeddings"). */
  addPromptTuning(opts: { numVirtualTokens: number; init?: Float32Array; seed: number }): ParamInfo;
  /** Fold every LoRA adapter into its base weight (W += alpha/r * B A) and drop the adapters. */
  mergeLora(): void;
  /** Gradient checkpointing: keep only each layer's input in training, recompute in backward
   *  (identical results; activation memory of one layer instead of all). */
  setGradientCheckpointing(on: boolean): void;
  /** Full fine-tuning: every base weight trainable (true) or frozen again (false). */
  setBaseTrainable(trainable: boolean): void;
  /** Trainable tensors in PEFT naming without the "base_model.model." prefix,
   *  e.g. "model.layers.0.self_attn.q_proj.lora_A.weight". */
  trainableParams(): ParamInfo[];
  getTensor(name: string): Float32Array;
  setTensor(name: string, data: Float32Array): void;
  /** Accumulated gradient of a trainable tensor (after forwardBackward). */
  getGrad(name: string): Float32Array;
  /** Forward + backward on one micro-batch. ids/labels are [batch*seqLen] row-major; label -100 is ignored.
   *  Gradients of (lossScale * sum of token losses) are ADDED to the trainable grads.
   *  Resolves with the summed loss (unscaled) and the number of label tokens. */
  forwardBackward(ids: Int32Array, labels: Int32Array, batch: number, seqLen: number, lossScale: number, step: number): Promise<{ lossSum: number; tokens: number }>;
  /** The loss of one batch without gradients, in eval mode (no dropout, no random numbers): labels as
   *  forwardBackward's (-100 ignored). Resolves with the summed loss and the number of label tokens. */
  forwardLoss(ids: Int32Array, labels: Int32Array, batch: number, seqLen: number): Promise<{ lossSum: number; tokens: number }>;
  zeroGrad(): void;
  /** Data parallel: sums the flat gradient block over the ranks in place (comm.init() first). */
  allReduceGrads(): Promise<void>;
  /** Data parallel: the next batches start at row `rows` of the step's global batch, so LoRA
   *  dropout draws the masks a one-rank run draws for those rows. */
  setDropoutRowOffset(rows: number): void;
  /** ZeRO stage 1: this process, rank `rank` of `size`, keeps the AdamW state of its 1/size slice
   *  of the trainable elements only (cut on 8-bit AdamW's 256-element blocks); adamwStep updates
   *  that slice and all-gathers the new values over comm's world, which must be that rank of that
   *  size. Call before the first step, plan and setOptimizerState. size 1: unsharded. */
  shardOptimizer(shard: { rank: number; size: number }): void;
  /** AdamW state for checkpoints: optimizer steps taken and each trainable tensor's moments
   *  (empty arrays before the first step), in the unsharded layout. Sharded (shardOptimizer), a
   *  collective every rank calls: rank 0 gets the whole state, the others names with empty moments. */
  getOptimizerState(): OptimizerState;
  /** Restore what getOptimizerState returned (after addLora): the next step continues bit for bit. */
  setOptimizerState(state: OptimizerState): void;
  /** Clip by global norm and apply one AdamW step to every trainable tensor; resolves with the pre-clip grad norm
   *  (non-finite: no update was made) and whether every trainable value is finite after the step. */
  adamwStep(opts: AdamWOptions): Promise<{ gradNorm: number; weightsFinite: boolean }>;
  /** Logits for every position: Float32Array of batch*seqLen*vocab. No cache involved. */
  logits(ids: Int32Array, batch: number, seqLen: number): Promise<Float32Array>;
  /** KV-cache generation: append tokens to one sequence's cache slot (default 0) and return the logits of
   *  the last one. */
  feed(ids: Int32Array, slot?: number): Promise<Float32Array>;
  /** One decode step for several sequences (continuous batching): ids[i] appended to slot slots[i] (distinct
   *  slots, each already fed its prompt; at most 8); logits [n, vocab], each row bit for bit what feed() of
   *  that token alone returns. */
  decode(slots: Int32Array, ids: Int32Array): Promise<Float32Array>;
  /** Empty a slot of the KV cache (default 0). */
  resetCache(slot?: number): void;
  /** Keep the first n cached tokens of a slot (reuse a shared prompt prefix: feed it once, truncate back to it). */
  truncateCache(n: number, slot?: number): void;
  /** Tokens currently in a slot of the KV cache. */
  cacheLength(slot?: number): number;
  /** Fix the run's memory (see PlanRequest). */
  plan(request: PlanRequest): void;
  /** What is allocated now (a meta model: what would be). */
  memoryPlan(): MemoryPlan;
  /** How often each kind was (re)allocated: constant while a run stays within its plan. */
  memoryStats(): { allocations: Record<MemKind, number> };
  /** Inference only (chat, score, eval, serve): the frozen linear weights (and an untied lm_head)
   *  go into the CPU GEMM's panel layout in place, packed once instead of by every prefill GEMM
   *  (fp32 on the CPU; CUDA, bf16 and f64 pack nothing). getTensor/setTensor/mergeLora/training
   *  unpack them first (bit for bit); the next inference call packs them again. Resolves with how
   *  many matrices are packed. */
  prepareInference(): Promise<number>;
  /** How many weight matrices are in inference panels now (0 after anything unpacked them). */
  packedWeights(): number;
}

export type GgufTensorType = 'f32' | 'f16' | 'q8_0' | 'q5_0' | 'q4_K' | 'q6_K';

export interface NativeAddon {
  Model: new (config: NativeModelConfig) => NativeModel;
  /** "cpu" always; whether the CUDA backend was built, how many devices it sees now, and the card
   *  the cuda backend uses (device 0) with its free and total memory. */
  backends(): {
    cpu: true; cudaBuilt: boolean; cudaDevices: number; cudaError?: string;
    cudaName?: string; cudaCapability?: string; cudaFreeBytes?: number; cudaTotalBytes?: number;
  };
  /** An architecture's parts by name: the PEFT module names of every linear layer but lm_head. */
  archInfo(arch: Arch): { loraModules: string[] };
  /** The engine's name for a checkpoint tensor (Bloom's optional "transformer." prefix added), or
   *  null when the engine has no use for it (lm_head of a tied model, rotary inv_freq buffers). */
  tensorName(arch: Arch, tieWordEmbeddings: boolean, name: string): string | null;
  /** GGUF tensor encodings (native/cpu/gguf_quant.h), as ggml's reference quantizers write them.
   *  Types: f32, f16, q8_0, q5_0, q4_K, q6_K; data is rows x cols, row-major. */
  gguf: {
    quantize(type: GgufTensorType, data: Float32Array, rows: number, cols: number): Promise<Uint8Array>;
    dequantize(type: GgufTensorType, bytes: Uint8Array, rows: number, cols: number): Float32Array;
    /** Bytes of one row; throws when cols is not a whole number of the type's blocks. */
    rowBytes(type: GgufTensorType, cols: number): number;
  };
  /** The data-parallel world (native/comm): init() reads the launcher's environment (mpirun/srun:
   *  MPI; a GPU run adds NCCL); without a launcher rank 0 of 1, backend "single". */
  comm: {
    init(opts: { device: Device }): CommWorld;
    /** In place: each element summed over the ranks (synchronous: a few scalars per step). */
    allReduceSum(values: Float64Array): void;
    barrier(): void;
    /** Stops every rank of the job (MPI_Abort); never returns. */
    abort(code: number): never;
  };
  version: string;
}

export interface CommWorld {
  rank: number;
  size: number;
  localRank: number;
  backend: 'single' | 'mpi' | 'nccl';
  /** "mpi", "slurm", "torchrun", or "" when not launched by one. */
  launcher: string;
}
