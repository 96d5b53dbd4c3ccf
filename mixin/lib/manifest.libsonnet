// A Prometheus rules file as YAML, written the way a person would: each
// rule's keys in the order Prometheus documents them (record or alert,
// expr, for, labels, annotations), its comment above it, expressions as
// literal blocks. std.manifestYamlDoc would sort the keys and drop the
// comments.
local scalar(s) = std.escapeStringJson(s);
local indent(text, pad) = std.join('\n', [
  if line == '' then '' else pad + line
  for line in std.split(std.rstripChars(text, '\n'), '\n')
]);
local plain(s) =
  // Names, durations and label values this project writes need no quotes.
  if std.length(std.findSubstr(': ', s)) == 0 && std.length(std.findSubstr(' #', s)) == 0
     && !std.member(['"', "'", '{', '[', '*', '&', '!', '|', '>', '%', '@', '`', '#'], s[0])
  then s
  else scalar(s);
local map(name, obj, pad) =
  [pad + name + ':'] + [
    pad + '  ' + k + ': ' + (if name == 'annotations' then scalar(obj[k]) else plain(obj[k]))
    for k in std.objectFields(obj)
  ];
local rule(r) =
  local pad = '      ';
  (if std.objectHasAll(r, 'comment') then [
     if line == '' then pad + '#' else pad + '# ' + line
     for line in std.split(r.comment, '\n')
   ] else [])
  + [pad + '- ' + (if std.objectHas(r, 'record') then 'record: ' + r.record else 'alert: ' + r.alert)]
  + [pad + '  expr: |', indent(r.expr, pad + '    ')]
  + (if std.objectHas(r, 'for') then [pad + '  for: ' + r['for']] else [])
  + (if std.objectHas(r, 'labels') then map('labels', r.labels, pad + '  ') else [])
  + (if std.objectHas(r, 'annotations') then map('annotations', r.annotations, pad + '  ') else []);
local group(g) =
  ['  - name: ' + g.name, '    rules:']
  + std.join([''], [rule(r) for r in g.rules]);
{
  rulesFile(header, groups)::
    header + 'groups:\n'
    + std.join('\n', std.join([''], [group(g) for g in groups])) + '\n',
}
