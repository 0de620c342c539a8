package config

import (
	"fmt"
	"strings"
)

// expand replaces each ${NAME} in s with env(NAME). NAME is a letter or
// underscore followed by letters, digits and underscores. "$${" stands for
// a literal "${"; any other "$" is kept as it is, so a secret such as
// "pa$$word" or "$ecret" survives. An unset variable expands to "" and is
// returned in unset (once per occurrence); a variable set to "" is not
// reported. A "${" that does not open a valid reference is an error.
//
// expand works on one scalar's text, after the YAML document has been
// parsed, so whatever a variable holds (quotes, colons, newlines) stays
// inside that scalar and cannot change the document's structure.
func expand(s string, env func(string) (string, bool)) (out string, unset []string, err error) {
	if !strings.Contains(s, "${") {
		return s, nil, nil
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		if strings.HasPrefix(s[i:], "$${") {
			b.WriteString("${")
			i += 3
			continue
		}
		if !strings.HasPrefix(s[i:], "${") {
			b.WriteByte(s[i])
			i++
			continue
		}
		end := strings.IndexByte(s[i+2:], '}')
		if end < 0 {
			return "", nil, fmt.Errorf(`has "${" without a closing "}"; write ${NAME}, or $${ for a literal "${"`)
		}
		name := s[i+2 : i+2+end]
		if !validVarName(name) {
			return "", nil, fmt.Errorf(`has ${%s}, which is not a variable reference; names are letters, digits and underscores (write $${ for a literal "${")`, name)
		}
		v, ok := env(name)
		if !ok {
			unset = append(unset, name)
		}
		b.WriteString(v)
		i += 2 + end + 1
	}
	return b.String(), unset, nil
}

func validVarName(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		switch {
		case c == '_', 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z':
		case '0' <= c && c <= '9' && i > 0:
		default:
			return false
		}
	}
	return true
}
