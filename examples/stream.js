// Streams one chunk per line of the request, then a summary (see docs/js.md).
//   async for chunk in rt.stream("lines", b"a\nb\nc"): ...

function handler(request, ctx) {
  const lines = request.text().split("\n");
  lines.forEach((line, i) => ctx.emit(`${i}: ${line}\n`));
  return `${lines.length} lines\n`;
}
