// Helpers shared by the k6 player scripts: URL resolution (RFC 3986 §5.2; k6 has no global
// URL class) and HLS attribute-list / line splitting.

function removeDotSegments(path) {
  const out = [];
  const segs = path.split('/');
  for (let i = 0; i < segs.length; i++) {
    const s = segs[i];
    if (s === '.') {
      if (i === segs.length - 1) out.push('');
    } else if (s === '..') {
      if (out.length > 1) out.pop();
      if (i === segs.length - 1) out.push('');
    } else {
      out.push(s);
    }
  }
  return out.join('/');
}

export function resolveUrl(base, ref) {
  ref = ref.trim();
  if (/^[a-zA-Z][a-zA-Z0-9+.-]*:/.test(ref)) return ref; // absolute URL
  const m = /^([a-zA-Z][a-zA-Z0-9+.-]*:)(\/\/[^/?#]*)?([^?#]*)(\?[^#]*)?/.exec(base);
  if (!m) return ref;
  const scheme = m[1];
  const authority = m[2] || '';
  const basePath = m[3] || '/';
  const baseQuery = m[4] || '';
  if (ref.startsWith('//')) return scheme + ref;
  if (ref === '' || ref.startsWith('#')) return scheme + authority + basePath + baseQuery;
  if (ref.startsWith('?')) return scheme + authority + basePath + ref.replace(/#.*$/, '');
  const noFrag = ref.replace(/#.*$/, '');
  const qi = noFrag.indexOf('?');
  const refPath = qi >= 0 ? noFrag.slice(0, qi) : noFrag;
  const refQuery = qi >= 0 ? noFrag.slice(qi) : '';
  let path;
  if (refPath.startsWith('/')) {
    path = refPath;
  } else if (refPath === '') {
    return scheme + authority + basePath + refQuery;
  } else {
    path = basePath.slice(0, basePath.lastIndexOf('/') + 1) + refPath;
  }
  return scheme + authority + removeDotSegments(path) + refQuery;
}

// Attribute list: KEY=value,KEY="quoted, with commas"
export function parseAttributes(s) {
  const attrs = {};
  const re = /([A-Z0-9-]+)=("[^"]*"|[^,]*)/g;
  let m;
  while ((m = re.exec(s)) !== null) {
    let v = m[2];
    if (v.startsWith('"')) v = v.slice(1, -1);
    attrs[m[1]] = v;
  }
  return attrs;
}

export function lines(text) {
  return text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l.length > 0);
}
