// What the rest of sft needs from a tokenizer. Implemented by src/tokenizer/tokenizer.ts.
export interface Tok {
  /** Text to ids. Special/added tokens written in the text (e.g. "<|im_end|>", "</s>", "<reserved_102>")
   *  become their single ids. No BOS/EOS is added. */
  encode(text: string): number[];
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
  /** chat_template from tokenizer_config.json, when present. */
  chatTemplate?: string;
}
