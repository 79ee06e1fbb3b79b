// Errors meant for the user: the message names the file/line/key and says what to do.
// The CLI prints them without a stack trace.
export class SftError extends Error {
  constructor(message: string, public readonly exitCode = 1) {
    super(message);
    this.name = 'SftError';
  }
}
