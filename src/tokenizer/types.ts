// What the rest of sft needs from a tokenizer. Implemented by src/tokenizer/tokenizer.ts.
//
// Special tokens come only from templates: user, assistant and system text goes through encodeText or
// encodeParts, where "<|im_end|>" written in the text is the characters < | im _end | >, never the
// turn-ending id. encode() reads special tokens and is kept for text whose special tokens are meant.

/** One piece of a templated string. */
export interface TextPart {
  text: string;
  /** The template's own text: special tokens written in it ("<|im_start|>", "</s>") become their ids.
   *  Every other part is text: it never yields a special token, nor a marker given to encodeParts. */
  fromTemplate?: boolean;
}

export interface Tok {
  /** Text to ids, special/added tokens written in the text (e.g. "<|im_end|>", "</s>", "<reserved_102>")
   *  becoming their single ids. Only for text whose special tokens are meant: a template's own strings,
   *  stop words, a prompt the operator writes. No BOS/EOS is added. */
  encode(text: string): number[];
  /** Text as text: a special token's string in it is tokenized like any other characters, as
   *  transformers does with split_special_tokens=True. Added tokens that are not special (Qwen's
   *  "<tool_call>", Baichuan's user-defined pieces) still match, as they do there. */
  encodeText(text: string): number[];
  /** The parts concatenated and tokenized as one string, with special tokens read only inside
   *  fromTemplate parts. `markers`: token strings the template writes (Baichuan's "<reserved_102>", a
   *  user-defined piece that sentencepiece would match anywhere) that the other parts may not produce
   *  either. When no other part spells a special token or marker, the ids are encode() of the whole. */
  encodeParts(parts: readonly TextPart[], markers?: readonly string[]): number[];
  /** A lower bound on encodeText(text).length that costs far less than encoding, so that a text far
   *  beyond the context can be refused without tokenizing it (0 when the tokenizer cannot bound it). */
  minTokens?(text: string): number;
  decode(ids: number[], opts?: { skipSpecialTokens?: boolean }): string;
  tokenToId(token: string): number | undefined;
  /** Size of the id space (max id + 1, added tokens included). */
  vocabSize: number;
  bosId?: number;
  eosId?: number;
  padId?: number;
  /** Token strings of bos/eos/pad as tokenizer_config.json names them. */
  bosToken?: string;
  eosToken?: string;
  padToken?: string;
  /** chat_template from tokenizer_config.json (or chat_template.jinja), when present. */
  chatTemplate?: string;
  /** transformers' special_tokens_map (bos_token, eos_token, unk_token, pad_token, sep_token, cls_token,
   *  mask_token, additional_special_tokens; those set), which apply_chat_template passes to the template. */
  specialTokensMap?: Record<string, string | string[]>;
}
