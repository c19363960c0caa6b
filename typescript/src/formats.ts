/**
 * The string formats of the contract, with the Python reference's exact meaning
 * (`schemas/models.py`: `parse_rfc3339`, `parse_event_id`) and its way of counting length.
 */

/** Length in Unicode code points, as Python's `len(str)` (a 128-emoji id is 128 long). */
export function codePointLength(text: string): number {
  let length = 0;
  for (let i = 0; i < text.length; i++) {
    const unit = text.charCodeAt(i);
    // A high surrogate followed by a low one is one code point.
    if (unit >= 0xd800 && unit <= 0xdbff) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) i++;
    }
    length++;
  }
  return length;
}

const DAYS_IN_MONTH = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
/** 0001-01-01T00:00:00Z and 10000-01-01T00:00:00Z in seconds since the Unix epoch. */
const FIRST_SECOND = -62_135_596_800;
const END_SECOND = 253_402_300_800;

function isLeapYear(year: number): boolean {
  return year % 4 === 0 && (year % 100 !== 0 || year % 400 === 0);
}

/**
 * Whether a string already matching the contract's RFC 3339 pattern is a real instant, as
 * Python's `datetime` reads it: a Gregorian date of years 1-9999 (no February 30), hours 0-23,
 * minutes and seconds 0-59 (no leap second 60), and, once the offset is applied, still inside
 * years 1-9999 in UTC. (The fraction, of any length, is truncated to microseconds and cannot
 * move the instant across a second.)
 */
export function isRealInstant(text: string): boolean {
  const year = Number(text.slice(0, 4));
  const month = Number(text.slice(5, 7));
  const day = Number(text.slice(8, 10));
  const hour = Number(text.slice(11, 13));
  const minute = Number(text.slice(14, 16));
  const second = Number(text.slice(17, 19));
  if (year < 1 || month < 1 || month > 12 || day < 1) return false;
  const monthDays = month === 2 && isLeapYear(year) ? 29 : (DAYS_IN_MONTH[month - 1] ?? 0);
  if (day > monthDays || hour > 23 || minute > 59 || second > 59) return false;
  let offsetSeconds = 0;
  const last = text[text.length - 1];
  if (last !== "Z" && last !== "z") {
    const sign = text[text.length - 6] === "-" ? -1 : 1;
    const offsetHours = Number(text.slice(-5, -3));
    const offsetMinutes = Number(text.slice(-2));
    offsetSeconds = sign * (offsetHours * 3600 + offsetMinutes * 60);
  }
  const date = new Date(0);
  date.setUTCFullYear(year, month - 1, day); // setUTCFullYear: years 1-99 stay 1-99
  date.setUTCHours(hour, minute, second, 0);
  const utcSecond = date.getTime() / 1000 - offsetSeconds;
  return utcSecond >= FIRST_SECOND && utcSecond < END_SECOND;
}

/**
 * RFC 3339 with microseconds and offset `Z` for `epochMicros` (microseconds since the epoch,
 * UTC), e.g. `2026-01-31T12:00:00.000001Z`.
 */
export function formatRfc3339Micros(epochMicros: bigint): string {
  const millis = epochMicros / 1000n;
  const iso = new Date(Number(millis)).toISOString(); // 2026-01-31T12:00:00.000Z
  const micros = ((epochMicros % 1_000_000n) + 1_000_000n) % 1_000_000n;
  return `${iso.slice(0, 19)}.${micros.toString().padStart(6, "0")}Z`;
}
